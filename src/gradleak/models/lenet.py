"""LeNet of "Deep Leakage from Gradients" (Zhu, Liu & Han, NeurIPS 2019).

Three 5x5 convolutions with 12 channels (strides 2, 2, 1; padding 2), each followed by
a sigmoid, then one linear layer on the flattened 12 x H/4 x W/4 features (768 at
32x32). DLG draws every weight and bias from U(-0.5, 0.5); that wide initialization
and the twice-differentiable sigmoid are what make its L-BFGS attack work so well.
"""

from __future__ import annotations

from torch import nn

from gradleak.errors import GradleakError
from gradleak.models.build import MODELS
from gradleak.models.layers import activation as make_activation
from gradleak.models.layers import check_input_shape, conv_out

INITS = ("uniform", "default")


@MODELS.register("lenet", "DLG's LeNet: 3 sigmoid 5x5 convs (12 ch) + linear, U(-0.5, 0.5) init (Zhu et al. 2019)")
def lenet(
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    activation: str = "sigmoid",
    init: str = "uniform",
) -> nn.Module:
    """DLG's LeNet as a flat nn.Sequential; `init="default"` keeps torch's initialization.

    `activation` is one of sigmoid (DLG), relu, tanh, leaky_relu (slope 0.2), gelu or
    none; the layer count never changes, so state_dict keys do not depend on it.
    """
    c, h, w = check_input_shape("lenet", input_shape)
    if init not in INITS:
        raise GradleakError(f"lenet: option init must be one of {', '.join(INITS)}; got {init!r}")
    acts = [make_activation("lenet", activation) or nn.Identity() for _ in range(3)]
    for stride in (2, 2, 1):
        h, w = conv_out(h, 5, stride, 2), conv_out(w, 5, stride, 2)
    model = nn.Sequential(
        nn.Conv2d(c, 12, kernel_size=5, stride=2, padding=2), acts[0],
        nn.Conv2d(12, 12, kernel_size=5, stride=2, padding=2), acts[1],
        nn.Conv2d(12, 12, kernel_size=5, stride=1, padding=2), acts[2],
        nn.Flatten(),
        nn.Linear(12 * h * w, num_classes),
    )
    if init == "uniform":
        for p in model.parameters():
            nn.init.uniform_(p, -0.5, 0.5)
    return model

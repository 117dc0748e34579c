"""LeNet of Deep Leakage from Gradients (Zhu et al., NeurIPS 2019).

Three 5x5 convolutions (strides 2, 2, 1, padding 2, 12 channels) with sigmoid
activations and one linear layer; every weight and bias drawn from U(-0.5, 0.5). DLG
needs twice-differentiable activations, hence the sigmoid.
"""

from __future__ import annotations

from torch import nn

from gradleak.models.layers import activation as make_activation
from gradleak.models.layers import check_input_shape, conv_out


def lenet(num_classes: int, input_shape: tuple[int, int, int], *, activation: str = "sigmoid",
          init: str = "uniform") -> nn.Module:
    c, h, w = check_input_shape("lenet", input_shape, 4)
    for _ in range(2):
        h, w = conv_out(h, 5, 2, 2), conv_out(w, 5, 2, 2)
    model = nn.Sequential(
        nn.Conv2d(c, 12, 5, stride=2, padding=2), make_activation(activation),
        nn.Conv2d(12, 12, 5, stride=2, padding=2), make_activation(activation),
        nn.Conv2d(12, 12, 5, stride=1, padding=2), make_activation(activation),
        nn.Flatten(),
        nn.Linear(12 * h * w, num_classes),
    )
    if init == "uniform":
        for p in model.parameters():
            nn.init.uniform_(p, -0.5, 0.5)
    elif init != "default":
        from gradleak.errors import GradleakError

        raise GradleakError(f"init must be 'uniform' or 'default', got {init!r}")
    return model

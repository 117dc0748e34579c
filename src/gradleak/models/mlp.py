"""A multilayer perceptron on flattened inputs.

Fully connected networks are the simplest case for gradient inversion: with a bias, the
first layer's input is recovered exactly from one weight-gradient row divided by the
matching bias gradient (Phong et al. 2017; the PRECODE break in Balunovic et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from gradleak.errors import GradleakError
from gradleak.models.build import MODELS
from gradleak.models.layers import activation as make_activation
from gradleak.models.layers import boolean, check_input_shape, positive_int


@MODELS.register("mlp", "Multilayer perceptron on flattened inputs (hidden=(256, 256), ReLU)")
def mlp(
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    hidden: tuple[int, ...] = (256, 256),
    activation: str = "relu",
    bias: bool = True,
) -> nn.Module:
    """Flatten, then Linear + activation per `hidden` width, then a linear head.

    `hidden` may be one integer or a sequence; `hidden=()` gives a single linear layer.
    """
    name = "mlp"
    c, h, w = check_input_shape(name, input_shape)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (Sequence, int)):
        raise GradleakError(f"{name}: option hidden must be a sequence of positive integers; got {hidden!r}")
    widths = [hidden] if isinstance(hidden, int) else list(hidden)
    widths = [positive_int(name, "hidden", v) for v in widths]
    bias = boolean(name, "bias", bias)
    make_activation(name, activation)
    layers: list[nn.Module] = [nn.Flatten()]
    size = math.prod((c, h, w))
    for width in widths:
        layers.append(nn.Linear(size, width, bias=bias))
        if (act := make_activation(name, activation)) is not None:
            layers.append(act)
        size = width
    layers.append(nn.Linear(size, num_classes, bias=bias))
    return nn.Sequential(*layers)

"""ConvNet of Inverting Gradients (Geiping et al., NeurIPS 2020) with micro-design switches.

Eight 3x3 convolutions of widths w, 2w, 2w, 4w, 4w, 4w, 4w, 4w, each followed by
normalization and an activation, max-pooling (3x3) after the sixth and the eighth, and
a linear classifier. The switches are the knobs of the SoK's Table 4 (Du et al.):
bias, activation (or none), dropout, max-pooling, kernel size and padding. Without
max-pooling the features are average-pooled to the size pooling would give, so the
classifier keeps its shape.
"""

from __future__ import annotations

from torch import nn

from gradleak.errors import GradleakError
from gradleak.models.layers import activation as make_activation
from gradleak.models.layers import check_input_shape, conv_out, norm2d

WIDTHS = (1, 2, 2, 4, 4, 4, 4, 4)
POOL_AFTER = (5, 7)


def convnet(
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    width: int = 64,
    bias: bool = True,
    activation: str = "relu",
    dropout: float = 0.0,
    maxpool: bool = True,
    kernel_size: int = 3,
    padding: int | None = None,
    norm: str = "batch",
) -> nn.Module:
    c, h, w = check_input_shape("convnet", input_shape, 9)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise GradleakError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    if not 0 <= dropout < 1:
        raise GradleakError(f"dropout must be in [0, 1), got {dropout!r}")
    padding = kernel_size // 2 if padding is None else padding
    layers: list[nn.Module] = []
    in_ch = c
    for i, mult in enumerate(WIDTHS):
        out_ch = mult * width
        layers += [nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=bias), norm2d(norm, out_ch),
                   make_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        h, w = conv_out(h, kernel_size, 1, padding), conv_out(w, kernel_size, 1, padding)
        if i in POOL_AFTER:
            h, w = h // 3, w // 3
            if h < 1 or w < 1:
                raise GradleakError(f"convnet: input_shape {tuple(input_shape)} is too small for two 3x3 poolings")
            layers.append(nn.MaxPool2d(3) if maxpool else nn.AdaptiveAvgPool2d((h, w)))
        in_ch = out_ch
    layers += [nn.Flatten(), nn.Linear(in_ch * h * w, num_classes, bias=bias)]
    return nn.Sequential(*layers)

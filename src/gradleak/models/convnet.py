"""ConvNet of "Inverting Gradients" (Geiping et al., NeurIPS 2020) with micro-design switches.

Architecture (from the paper's public inversefed code, `ConvNet`, as seen in copies
found by code search; its model constructor uses width 64): eight 3x3 convolutions with
padding 1 and widths w, 2w, 2w, 4w, 4w, 4w, 4w, 4w, each followed by BatchNorm and
ReLU; a 3x3 max-pooling after the sixth and after the eighth convolution; flatten; a
linear classifier (36w inputs at 32x32).

The options are the micro-design knobs of Du et al., "SoK: On Gradient Leakage in
Federated Learning", Sec. 5.2.2 / Table 4: removing ReLU, dropout or max-pooling, or a
larger kernel, made attacks easier; removing bias, a smaller kernel or more padding made
them harder. Choices the SoK's extracted text leaves open, and what we do:

- `bias=False` removes the bias of every convolution and of the linear layer; the
  normalization layers keep their affine shift (use `norm="none"` to drop those too).
- `dropout=p` adds one Dropout layer (the SoK's standard ConvNet has exactly one; its
  position is not given) between the flatten and the linear layer. Geiping's ConvNet has
  none, hence the default 0. Dropout only acts in train mode.
- `maxpool=False` removes both poolings outright and the linear layer takes the full
  flattened map (4w x H x W inputs), so no other aggregation stands in for the pooling.
- `kernel_size` and `padding` apply to all eight convolutions; padding defaults to
  kernel_size // 2 (size-preserving), and the flatten size is computed for any choice.

Layers live in one nn.Sequential with names conv{i}, norm{i}, act{i}, pool{j},
flatten, dropout, linear; disabled parts are left out, not replaced by Identity.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from gradleak.errors import GradleakError
from gradleak.models.build import MODELS
from gradleak.models.layers import activation as make_activation
from gradleak.models.layers import (
    boolean,
    check_input_shape,
    conv_out,
    non_negative_int,
    norm2d,
    positive_int,
    probability,
    too_small,
)

WIDTHS = (1, 2, 2, 4, 4, 4, 4, 4)
POOL_AFTER = (5, 7)  # zero-based indices of the convolutions followed by max-pooling
POOL_SIZE = 3


@MODELS.register("convnet", "Geiping et al.'s 8-conv ConvNet (width 64) with the SoK's micro-design switches")
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
    """Geiping's ConvNet; `padding=None` means kernel_size // 2."""
    name = "convnet"
    shape = check_input_shape(name, input_shape)
    c, h, w = shape
    width = positive_int(name, "width", width)
    bias = boolean(name, "bias", bias)
    maxpool = boolean(name, "maxpool", maxpool)
    dropout = probability(name, "dropout", dropout)
    kernel_size = positive_int(name, "kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise GradleakError(f"{name}: option kernel_size must be a positive odd integer; got {kernel_size!r}")
    padding = kernel_size // 2 if padding is None else non_negative_int(name, "padding", padding)
    make_activation(name, activation)  # validate once, before building anything
    norm2d(name, norm, 1)

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_ch = c
    pools = 0
    for i, mult in enumerate(WIDTHS):
        out_ch = mult * width
        h, w = conv_out(h, kernel_size, 1, padding), conv_out(w, kernel_size, 1, padding)
        if h < 1 or w < 1:
            raise too_small(name, shape, f"conv{i} (kernel_size {kernel_size}, padding {padding})")
        layers[f"conv{i}"] = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=bias)
        if (norm_layer := norm2d(name, norm, out_ch)) is not None:
            layers[f"norm{i}"] = norm_layer
        if (act := make_activation(name, activation)) is not None:
            layers[f"act{i}"] = act
        if i in POOL_AFTER and maxpool:
            h, w = h // POOL_SIZE, w // POOL_SIZE
            if h < 1 or w < 1:
                raise too_small(name, shape, f"pool{pools} ({POOL_SIZE}x{POOL_SIZE} max-pooling; "
                                f"inputs of at least 9x9 work with the default kernel and padding)")
            layers[f"pool{pools}"] = nn.MaxPool2d(POOL_SIZE)
            pools += 1
        in_ch = out_ch
    layers["flatten"] = nn.Flatten()
    if dropout > 0:
        layers["dropout"] = nn.Dropout(dropout)
    layers["linear"] = nn.Linear(in_ch * h * w, num_classes, bias=bias)
    return nn.Sequential(layers)

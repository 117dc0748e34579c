"""ResNet-18 and ResNet-34, CIFAR variant (He, Zhang, Ren & Sun, "Deep Residual Learning
for Image Recognition", CVPR 2016).

The ImageNet stem (7x7 stride-2 convolution and max-pooling) is replaced by one 3x3
stride-1 convolution with `width` channels, as is usual for 32x32 inputs. Four stages of
BasicBlocks ([2, 2, 2, 2] or [3, 4, 6, 3]) with widths w, 2w, 4w, 8w and strides 1, 2,
2, 2; a 1x1 convolution + norm shortcut where the shape changes; global average
pooling; a linear layer. Convolutions have no bias (a norm follows each), the linear
layer has one. With width 64 and 10 classes: 11,173,962 / 21,282,122 parameters.

State-dict keys follow the naming most CIFAR ResNet checkpoints use (conv1, bn1,
layer1..layer4 with conv1/bn1/conv2/bn2/shortcut per block, linear), so such
checkpoints load without renaming; the "bn" modules are GroupNorm or Identity when
`norm` says so.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.models.build import MODELS
from gradleak.models.layers import check_input_shape, norm2d, positive_int


def _norm(model: str, kind: str, channels: int) -> nn.Module:
    # Identity keeps the attribute names stable when normalization is switched off
    return norm2d(model, kind, channels) or nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016, Fig. 2)."""

    def __init__(self, model: str, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(model, norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(model, norm, out_ch)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          _norm(model, norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet built from BasicBlocks."""

    def __init__(self, model: str, blocks: tuple[int, ...], num_classes: int, in_ch: int, width: int,
                 norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(model, norm, width)
        ch = width
        for stage, count in enumerate(blocks):
            out = width * 2**stage
            stride = 1 if stage == 0 else 2
            layer = []
            for j in range(count):
                layer.append(BasicBlock(model, ch, out, stride if j == 0 else 1, norm))
                ch = out
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


def _resnet(model: str, blocks: tuple[int, ...], num_classes: int, input_shape: tuple[int, int, int],
            width: int, norm: str) -> nn.Module:
    # stride-2 3x3 convolutions with padding 1 map any size >= 1 to a size >= 1, so
    # every positive input shape works and no minimum is enforced
    c, _, _ = check_input_shape(model, input_shape)
    width = positive_int(model, "width", width)
    norm2d(model, norm, 1)  # validate before building
    return ResNet(model, blocks, num_classes, c, width, norm)


@MODELS.register("resnet18", "ResNet-18, CIFAR variant: 3x3 stem, BasicBlocks [2,2,2,2], 11.2M params (He et al. 2016)")
def resnet18(
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    width: int = 64,
    norm: str = "batch",
) -> nn.Module:
    """ResNet-18; `width` is the stem/first-stage width, `norm` batch, group or none."""
    return _resnet("resnet18", (2, 2, 2, 2), num_classes, input_shape, width, norm)


@MODELS.register("resnet34", "ResNet-34, CIFAR variant: 3x3 stem, BasicBlocks [3,4,6,3], 21.3M params (He et al. 2016)")
def resnet34(
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    width: int = 64,
    norm: str = "batch",
) -> nn.Module:
    """ResNet-34; `width` is the stem/first-stage width, `norm` batch, group or none."""
    return _resnet("resnet34", (3, 4, 6, 3), num_classes, input_shape, width, norm)

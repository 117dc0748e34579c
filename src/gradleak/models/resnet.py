"""ResNet-18/34 in the CIFAR variant (He et al., CVPR 2016).

3x3 stride-1 stem with no max-pooling, BasicBlocks in four stages of widths
w, 2w, 4w, 8w (strides 1, 2, 2, 2), global average pooling and a linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.models.layers import check_input_shape, norm2d


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = norm2d(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = norm2d(norm, out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), norm2d(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int, in_ch: int, width: int, norm: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, width, 3, 1, 1, bias=False), norm2d(norm, width), nn.ReLU())
        stages, ch = [], width
        for i, n in enumerate(blocks):
            out = width * 2**i
            for j in range(n):
                stages.append(BasicBlock(ch, out, 2 if (j == 0 and i > 0) else 1, norm))
                ch = out
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def resnet18(num_classes: int, input_shape: tuple[int, int, int], *, width: int = 64, norm: str = "batch") -> nn.Module:
    c, _, _ = check_input_shape("resnet18", input_shape, 8)
    return ResNet((2, 2, 2, 2), num_classes, c, width, norm)


def resnet34(num_classes: int, input_shape: tuple[int, int, int], *, width: int = 64, norm: str = "batch") -> nn.Module:
    c, _, _ = check_input_shape("resnet34", input_shape, 8)
    return ResNet((3, 4, 6, 3), num_classes, c, width, norm)

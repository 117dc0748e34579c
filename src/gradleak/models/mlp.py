"""A multilayer perceptron on flattened inputs."""

from __future__ import annotations

import math

from torch import nn

from gradleak.models.layers import activation as make_activation


def mlp(num_classes: int, input_shape: tuple[int, ...], *, hidden: tuple[int, ...] = (256, 256),
        activation: str = "relu", bias: bool = True) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    size = math.prod(int(s) for s in input_shape)
    for width in hidden:
        layers += [nn.Linear(size, int(width), bias=bias), make_activation(activation)]
        size = int(width)
    layers.append(nn.Linear(size, num_classes, bias=bias))
    return nn.Sequential(*layers)

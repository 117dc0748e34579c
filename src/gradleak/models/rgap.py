"""R-GAP's models (Zhu & Blaschko, "R-GAP: Recursive Gradient Attack on Privacy", ICLR 2021).

No biases, LeakyReLU(0.2) after every layer but the last, and in the paper one logit
(num_classes=1) trained with the logistic loss on labels in {-1, +1}. CNN6-d narrows
the second convolution to make the network rank-deficient. Layers form one flat
nn.Sequential so an analytic attack can walk them in order. Weights use torch's
default initialization.
"""

from __future__ import annotations

import math

from torch import nn

from gradleak.models.layers import check_input_shape, conv_out

# (in, out, kernel, stride, padding); in = None means the input's channels
CNN6 = ((None, 12, 4, 2, 2), (12, 36, 3, 2, 1), (36, 36, 3, 1, 1), (36, 36, 3, 1, 1), (36, 64, 3, 2, 1),
        (64, 128, 3, 1, 1))
CNN6_D = ((None, 12, 4, 2, 2), (12, 20, 3, 2, 1), (20, 36, 3, 1, 1), (36, 36, 3, 1, 1), (36, 64, 3, 2, 1),
          (64, 128, 3, 1, 1))


def _conv_stack(spec, num_classes: int, input_shape: tuple[int, int, int], name: str) -> nn.Sequential:
    c, h, w = check_input_shape(name, input_shape, 8)
    layers: list[nn.Module] = []
    for in_ch, out_ch, k, s, p in spec:
        layers += [nn.Conv2d(c if in_ch is None else in_ch, out_ch, k, s, p, bias=False), nn.LeakyReLU(0.2)]
        h, w = conv_out(h, k, s, p), conv_out(w, k, s, p)
        c = out_ch
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes, bias=False)]
    return nn.Sequential(*layers)


def cnn6(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    return _conv_stack(CNN6, num_classes, input_shape, "cnn6")


def cnn6_d(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    return _conv_stack(CNN6_D, num_classes, input_shape, "cnn6-d")


def fcn3(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    size = math.prod(int(s) for s in input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(size, 1000, bias=False), nn.LeakyReLU(0.2),
                         nn.Linear(1000, 100, bias=False), nn.LeakyReLU(0.2), nn.Linear(100, num_classes, bias=False))

"""The networks of R-GAP (Zhu & Blaschko, "R-GAP: Recursive Gradient Attack on Privacy", ICLR 2021).

No biases anywhere and LeakyReLU(0.2) after every convolution or hidden layer, so the
analytic attack can invert each activation; the last layer is a plain Linear. The paper
uses one logit (`num_classes=1`) trained with the logistic loss on labels in {-1, +1}
and pixels in [0, 1]; its closed-form last-layer step needs exactly that. Other class
counts build fine (for gradient-matching attacks) but are outside R-GAP's analysis.

- CNN6 on 3x32x32: Conv 3->12 k4 s2 p2 (12x17x17); Conv 12->36 k3 s2 p1 (36x9x9);
  Conv 36->36 k3 s1 p1 twice; Conv 36->64 k3 s2 p1 (64x5x5); Conv 64->128 k3 s1 p1
  (128x5x5); Linear 3200 -> num_classes.
- CNN6-d: as CNN6 but the second convolution is 12->20 and the third 20->36, the
  paper's rank-deficient example.
- FCN3: Linear C*H*W -> 1000 -> 100 -> num_classes (784 inputs for MNIST).

Each model is one flat nn.Sequential, (Conv2d, LeakyReLU) pairs then Flatten and
Linear for the CNNs, so an analytic attack can walk the layers in order.

Initialization is torch's default: the authors' code seeds torch and applies no
initialization of its own. One deliberate difference from that code: its FCN3 also
puts a LeakyReLU on the logit (its CNN6 does not); we keep every logit linear, as in
the paper's last-layer derivation.
"""

from __future__ import annotations

import math

from torch import nn

from gradleak.models.build import MODELS
from gradleak.models.layers import check_input_shape, conv_out

SLOPE = 0.2

# (out_channels, kernel, stride, padding) per convolution; in_channels chain from the input
CNN6_SPEC = ((12, 4, 2, 2), (36, 3, 2, 1), (36, 3, 1, 1), (36, 3, 1, 1), (64, 3, 2, 1), (128, 3, 1, 1))
CNN6D_SPEC = ((12, 4, 2, 2), (20, 3, 2, 1), (36, 3, 1, 1), (36, 3, 1, 1), (64, 3, 2, 1), (128, 3, 1, 1))
FCN3_HIDDEN = (1000, 100)


def _conv_stack(spec: tuple[tuple[int, int, int, int], ...], num_classes: int,
                input_shape: tuple[int, int, int], name: str) -> nn.Sequential:
    # the first convolution (k4, p2) maps any size >= 1 to >= 2 and the rest never shrink
    # a size >= 1 to 0, so every positive input shape works
    c, h, w = check_input_shape(name, input_shape)
    layers: list[nn.Module] = []
    for out_ch, k, s, p in spec:
        layers += [nn.Conv2d(c, out_ch, k, stride=s, padding=p, bias=False), nn.LeakyReLU(SLOPE)]
        c, h, w = out_ch, conv_out(h, k, s, p), conv_out(w, k, s, p)
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes, bias=False)]
    return nn.Sequential(*layers)


@MODELS.register("cnn6", "R-GAP's CNN6: 6 bias-free convs + linear, LeakyReLU 0.2; paper: 1 logit, logistic loss")
def cnn6(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """R-GAP's CNN6 (Linear 3200 -> num_classes at 3x32x32)."""
    return _conv_stack(CNN6_SPEC, num_classes, input_shape, "cnn6")


@MODELS.register("cnn6-d", "R-GAP's rank-deficient CNN6-d (convs 2-3: 12->20->36); paper: 1 logit, logistic loss")
def cnn6_d(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """R-GAP's CNN6-d: CNN6 with a 20-channel second convolution."""
    return _conv_stack(CNN6D_SPEC, num_classes, input_shape, "cnn6-d")


@MODELS.register("fcn3", "R-GAP's FCN3: bias-free Linear in->1000->100->classes, LeakyReLU 0.2; paper: 1 logit")
def fcn3(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """R-GAP's FCN3 (784 -> 1000 -> 100 -> num_classes on MNIST)."""
    size = math.prod(check_input_shape("fcn3", input_shape))
    layers: list[nn.Module] = [nn.Flatten()]
    for width in FCN3_HIDDEN:
        layers += [nn.Linear(size, width, bias=False), nn.LeakyReLU(SLOPE)]
        size = width
    layers.append(nn.Linear(size, num_classes, bias=False))
    return nn.Sequential(*layers)

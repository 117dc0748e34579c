"""R-GAP (Zhu & Blaschko, ICLR 2021): closed-form recursive inversion of bias-free LeakyReLU chains.

`recursion` holds each closed-form step, `network` the walk over a model (also used by
the rank analysis), `attack` the registered attack `RGAP`.
"""

from gradleak.attacks.rgap.attack import RGAP, gradient_mismatch, observed_gradients
from gradleak.attacks.rgap.network import (
    RGAPLayer,
    invert_layers,
    invert_network,
    rgap_layers,
)
from gradleak.attacks.rgap.recursion import (
    Inconsistent,
    invert_conv_input,
    invert_linear_input,
    leaky_relu_inverse,
    logit_from_last_layer,
    softmax_top,
)

__all__ = ["Inconsistent", "RGAP", "RGAPLayer", "gradient_mismatch", "invert_conv_input", "invert_layers",
           "invert_linear_input", "invert_network", "leaky_relu_inverse", "logit_from_last_layer",
           "observed_gradients", "rgap_layers", "softmax_top"]

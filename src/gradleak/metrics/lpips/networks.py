"""The networks behind LPIPS (Zhang et al., CVPR 2018) and ST-LPIPS (Ghildyal & Liu, ECCV 2022).

Plain torch, no torchvision. Parameter names are those of the published weight files,
so they load with strict key checking:

- `FeatureStack`: torchvision's AlexNet / VGG-16 `features.<i>` layout (ImageNet
  checkpoints `alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`), tapped at the five
  ReLUs LPIPS uses: AlexNet relu1..relu5, VGG relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
- `SlicedStack`: the shift-tolerant backbones, `slice<k>.<i>` with the global layer
  index i, as in `alex_shift_tolerant.pth` / `vgg_shift_tolerant.pth`. Every stride is
  replaced by a stride-1 op followed by `BlurPool` (anti-aliased downsampling, Zhang,
  ICML 2019), whose reflect padding is twice the usual.
- `LPIPSNetwork`: input scaling + backbone + one 1x1 linear head per tap; its
  `state_dict` is exactly the shift-tolerant weight file.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NETS = ("alex", "vgg")
VARIANTS = ("standard", "shift-tolerant")

# channels of the five taps
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}

# index of the last layer of each tap in the flat layer list (torchvision numbering for
# the standard nets, the ST-LPIPS release's numbering for the shift-tolerant ones)
TAPS = {
    ("standard", "alex"): (1, 4, 7, 9, 11),
    ("standard", "vgg"): (3, 8, 15, 22, 29),
    ("shift-tolerant", "alex"): (2, 6, 10, 12, 14),
    ("shift-tolerant", "vgg"): (3, 9, 17, 25, 33),
}

# smallest image side (per side, the ops are separable) at which every tap is non-empty:
# standard AlexNet's stride-4 conv and two 3x3/2 max-pools need 31 (taps 3..5 are then
# 1x1), VGG's four 2x2/2 pools need 16; the shift-tolerant nets need room for their
# reflect padding (21 and 18). Found by trying every size; the tests check each bound.
MIN_SIDE = {
    ("standard", "alex"): 31,
    ("standard", "vgg"): 16,
    ("shift-tolerant", "alex"): 21,
    ("shift-tolerant", "vgg"): 18,
}

# LPIPS v0.1 maps [-1, 1] inputs to roughly ImageNet-normalized ones
INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)

# feature normalization guard, as in the reference implementation
UNIT_EPS = 1e-10

VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)


class BlurPool(nn.Module):
    """Reflect-pad by 2, then a depthwise 3x3 binomial filter ([1, 2, 1] outer itself / 16) at stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        # a buffer, not a constant: the weight file carries it under this name
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(padded, self.filt, stride=2, groups=x.shape[1])


def alexnet_layers() -> list[nn.Module]:
    """torchvision's AlexNet `features[0:12]` (the final max-pool feeds no tap)."""
    return [
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    ]


def shift_tolerant_alexnet_layers() -> list[nn.Module]:
    """ST-LPIPS AlexNet: stride-1 conv1 and max-pools, each followed by a `BlurPool`."""
    return [
        nn.Conv2d(3, 64, 11, stride=1, padding=2), BlurPool(64), nn.ReLU(),
        nn.MaxPool2d(3, 1), BlurPool(64), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 1), BlurPool(192), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    ]


def vgg16_layers(shift_tolerant: bool = False) -> list[nn.Module]:
    """VGG-16 up to relu5_3; max-pools are 2x2/2, or 2x2/1 + `BlurPool` when shift-tolerant."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers += [nn.MaxPool2d(2, 1), BlurPool(channels)] if shift_tolerant else [nn.MaxPool2d(2, 2)]
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
            channels = int(item)
    return layers


class FeatureStack(nn.Module):
    """Layers in one `features` sequence; returns the outputs at `taps`."""

    def __init__(self, layers: Sequence[nn.Module], taps: Sequence[int]) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class SlicedStack(nn.Module):
    """Layers grouped as `slice1..slice5` (one per tap), each keeping global indices as names."""

    def __init__(self, layers: Sequence[nn.Module], taps: Sequence[int]) -> None:
        super().__init__()
        start = 0
        for k, end in enumerate(taps, start=1):
            named = OrderedDict((str(i), layers[i]) for i in range(start, end + 1))
            self.add_module(f"slice{k}", nn.Sequential(named))
            start = end + 1
        self.count = len(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k in range(1, self.count + 1):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)
        return out


class LinearHead(nn.Module):
    """1x1 convolution to one channel, no bias: the learned per-channel weights of a tap."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # named "model.1": the released heads were trained behind a dropout at index 0,
        # which is the identity at evaluation and is left out
        self.model = nn.ModuleDict({"1": nn.Conv2d(channels, 1, 1, bias=False)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model["1"](x)


class InputScaling(nn.Module):
    """[-1, 1] -> (x - shift) / scale per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(INPUT_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(INPUT_SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def make_backbone(variant: str, net: str) -> nn.Module:
    """The untrained tapped backbone for (`variant`, `net`)."""
    taps = TAPS[(variant, net)]
    if variant == "standard":
        return FeatureStack(alexnet_layers() if net == "alex" else vgg16_layers(), taps)
    layers = shift_tolerant_alexnet_layers() if net == "alex" else vgg16_layers(shift_tolerant=True)
    return SlicedStack(layers, taps)


class LPIPSNetwork(nn.Module):
    """`scaling_layer`, `net` (the backbone) and `lin0..lin4`, in the reference's names."""

    def __init__(self, variant: str, net: str) -> None:
        super().__init__()
        self.variant, self.net_name = variant, net
        self.scaling_layer = InputScaling()
        self.net = make_backbone(variant, net)
        for k, channels in enumerate(CHANNELS[net]):
            self.add_module(f"lin{k}", LinearHead(channels))

    def heads(self) -> list[LinearHead]:
        return [getattr(self, f"lin{k}") for k in range(len(CHANNELS[self.net_name]))]

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-length (over channels) features of the taps, for images in [-1, 1]."""
        out = []
        for f in self.net(self.scaling_layer(images)):
            norm = f.pow(2).sum(dim=1, keepdim=True).sqrt()
            out.append(f / (norm + UNIT_EPS))
        return out

    def distance(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum over taps of the spatial mean of the head-weighted squared feature difference."""
        total = None
        for head, fa, fb in zip(self.heads(), a, b):
            term = head((fa - fb) ** 2).mean(dim=(1, 2, 3))
            total = term if total is None else total + term
        if total is None:
            raise ValueError("LPIPSNetwork.distance needs at least one tap")
        return total


__all__ = [
    "BlurPool",
    "CHANNELS",
    "FeatureStack",
    "LPIPSNetwork",
    "LinearHead",
    "MIN_SIDE",
    "NETS",
    "SlicedStack",
    "TAPS",
    "VARIANTS",
    "alexnet_layers",
    "make_backbone",
    "shift_tolerant_alexnet_layers",
    "vgg16_layers",
]

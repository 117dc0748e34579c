"""Find and load the weight files of LPIPS (Zhang et al., CVPR 2018) and ST-LPIPS (Ghildyal & Liu, ECCV 2022).

Nothing is downloaded. Standard LPIPS needs two files: the torchvision ImageNet
checkpoint of the backbone (looked for where torch.hub caches it,
`<torch hub dir>/checkpoints/<file>`, i.e. `$TORCH_HOME/hub/checkpoints`, TORCH_HOME
defaulting to `$XDG_CACHE_HOME/torch` or `~/.cache/torch`) and the LPIPS v0.1 linear
heads (inside an installed `lpips` package). ST-LPIPS needs one file, shipped inside
the `stlpips-pytorch` package. Any of them can be given as a path instead.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Mapping, Union

import torch
import torch.hub

from gradleak.errors import CorruptFileError, GradleakError
from gradleak.metrics.lpips.networks import NETS, VARIANTS, LPIPSNetwork

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

TORCHVISION_URL = "https://download.pytorch.org/models/"
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
# --no-deps: both packages depend on torchvision, which these files do not need
LPIPS_PIP = "pip install --no-deps lpips==0.1.4"
STLPIPS_PIP = "pip install --no-deps stlpips-pytorch==0.0.2"

# torchvision checkpoints also hold the classifier, which LPIPS does not use
IGNORED_BACKBONE_PREFIXES = ("classifier.",)


@dataclass(frozen=True)
class WeightFiles:
    """The resolved files of one network: (backbone, heads) for standard LPIPS, (weights,) for ST-LPIPS."""

    variant: str
    net: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class _Wanted:
    what: str  # e.g. "torchvision AlexNet ImageNet checkpoint alexnet-owt-7be5be79.pth"
    candidates: tuple[str, ...]  # every place looked, in words
    found: Path | None
    hint: str


def check_choice(net: str, variant: str) -> None:
    if net not in NETS:
        raise GradleakError(f"net must be one of {', '.join(map(repr, NETS))}, got {net!r}")
    if variant not in VARIANTS:
        raise GradleakError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")


def package_dir(name: str) -> Path | None:
    """Folder of an installed top-level package, without importing it (both import torchvision)."""
    try:
        spec = find_spec(name)
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without __spec__
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _given(path: PathLike, argument: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise GradleakError(f"{argument} must be an existing weight file, got {str(path)!r} (no such file)")
    return p


def _in_package(package: str, dist: str, relative: str, what: str, pip: str, argument: str) -> _Wanted:
    root = package_dir(package)
    if root is None:
        where = f"the installed {package!r} package (not installed)"
        found = None
    else:
        where = str(root / relative)
        found = root / relative if (root / relative).is_file() else None
    hint = f"{pip} (ships {relative}), or pass {argument}=PATH"
    return _Wanted(f"{what} {dist}:{relative}", (where,), found, hint)


def _user_file(path: PathLike, argument: str) -> _Wanted:
    return _Wanted(argument, (), _given(path, argument), "")


def _backbone(net: str) -> _Wanted:
    name = BACKBONE_FILES[net]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = folder / name if (folder / name).is_file() else None
    hint = f"download {TORCHVISION_URL}{name} into {folder}/, or pass backbone=PATH"
    arch = "AlexNet" if net == "alex" else "VGG-16"
    return _Wanted(f"torchvision {arch} ImageNet checkpoint {name}", (str(folder / name),), found, hint)


def locate(
    net: str,
    variant: str,
    *,
    backbone: PathLike | None = None,
    heads: PathLike | None = None,
    weights: PathLike | None = None,
) -> WeightFiles:
    """Resolve the weight files for (`net`, `variant`); all missing files are named in one error."""
    check_choice(net, variant)
    if variant == "standard":
        if weights is not None:
            raise GradleakError(
                f"weights= is the single ST-LPIPS file; standard LPIPS takes backbone= and heads=, got weights={weights!r}"
            )
        wanted = [
            _user_file(backbone, "backbone") if backbone is not None else _backbone(net),
            _user_file(heads, "heads") if heads is not None else _in_package(
                "lpips", "lpips", f"weights/v0.1/{net}.pth", "LPIPS v0.1 linear heads", LPIPS_PIP, "heads"),
        ]
    else:
        if backbone is not None or heads is not None:
            raise GradleakError(
                "backbone= and heads= are for standard LPIPS; shift-tolerant LPIPS takes the single file weights=, "
                f"got backbone={backbone!r}, heads={heads!r}"
            )
        wanted = [
            _user_file(weights, "weights") if weights is not None else _in_package(
                "stlpips_pytorch", "stlpips-pytorch", f"weights/vST0.0/{net}_shift_tolerant.pth",
                "ST-LPIPS weights", STLPIPS_PIP, "weights"),
        ]
    missing = [w for w in wanted if w.found is None]
    if missing:
        parts = [f"{w.what} (looked in: {', '.join(w.candidates)}; get it: {w.hint})" for w in missing]
        raise GradleakError(f"{variant} LPIPS ({net}) needs weight files that were not found: " + "; ".join(parts))
    return WeightFiles(variant, net, tuple(w.found.resolve() for w in wanted if w.found is not None))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A tensor-only state dict from `path` (weights_only: no code in the file runs)."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(f"weight file {path} cannot be read as a torch state dict: {first}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CorruptFileError(f"weight file {path} must hold a state dict (names -> tensors), got {type(state).__name__}")
    return dict(state)


def _check_keys(path: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], role: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        problems = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                problems.append(f"{label}: {shown}")
        raise CorruptFileError(f"weight file {path} is not a valid {role} state dict; " + "; ".join(problems))


def load_network(files: WeightFiles) -> LPIPSNetwork:
    """Build the network of `files` and fill it strictly from the files; eval mode, float32, frozen."""
    model = LPIPSNetwork(files.variant, files.net)
    own = model.state_dict()
    arch = f"{files.variant} {files.net}"
    if files.variant == "standard":
        backbone_path, heads_path = files.paths
        backbone = {
            k: v for k, v in read_state_dict(backbone_path).items() if not k.startswith(IGNORED_BACKBONE_PREFIXES)
        }
        _check_keys(backbone_path, backbone, model.net.state_dict(), f"torchvision {files.net} features")
        model.net.load_state_dict(backbone, strict=True)
        heads = read_state_dict(heads_path)
        _check_keys(heads_path, heads, {k: v for k, v in own.items() if k.startswith("lin")}, f"LPIPS {files.net} heads")
        model.load_state_dict(heads, strict=False)  # keys checked above; the rest came from the backbone
    else:
        (path,) = files.paths
        state = read_state_dict(path)
        _check_keys(path, state, own, f"ST-LPIPS {files.net}")
        model.load_state_dict(state, strict=True)
    log.debug("loaded %s LPIPS network from %s", arch, ", ".join(map(str, files.paths)))
    model.requires_grad_(False)
    return model.float().eval()


__all__ = [
    "BACKBONE_FILES",
    "LPIPS_PIP",
    "STLPIPS_PIP",
    "TORCHVISION_URL",
    "WeightFiles",
    "load_network",
    "locate",
    "package_dir",
    "read_state_dict",
]

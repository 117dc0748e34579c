"""Build a registered model deterministically and load checkpoints all or nothing.

Factories are registered in `MODELS` with the signature
`factory(num_classes, input_shape, *, option=default, ...)`; the keyword options and
their defaults are read from that signature, so help texts and error messages never
drift from the code.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from gradleak.checks import check_int, check_positive_int
from gradleak.errors import GradleakError
from gradleak.models.layers import check_input_shape
from gradleak.registry import Registry, check_options

log = logging.getLogger(__name__)

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")

# wrapping keys used by common training scripts (ours, R-GAP's, Lightning-style exports)
_WRAPPER_KEYS = ("state_dict", "model_state_dict")
# nn.DataParallel / DistributedDataParallel prefix every key with this
_PARALLEL_PREFIX = "module."


def resolve(name: str) -> tuple[str, ModelFactory]:
    """(display name, factory) for a registered name or a user's `path/to/file.py:factory`.

    A user factory has the registered signature `factory(num_classes, input_shape, **options)`
    and returns any `nn.Module`, so the CLI can audit a user's own architecture.
    """
    if ".py:" not in str(name):
        return MODELS.entry(name).name, MODELS.get(name)
    import importlib.util

    file, attr = str(name).rsplit(":", 1)
    path = Path(file).expanduser()
    if not path.is_file():
        raise GradleakError(f"model file {file!r} (from model {name!r}) does not exist")
    spec = importlib.util.spec_from_file_location(f"gradleak_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report, do not hide, its failure
        raise GradleakError(f"model file {file!r} failed to import: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise GradleakError(f"model file {file!r} has no callable {attr!r}")
    return str(name), factory


def model_options(name: str) -> dict[str, object]:
    """Option name -> default for the model `name` (raises UnknownNameError)."""
    params = list(inspect.signature(resolve(name)[1]).parameters.values())
    # the first two parameters are num_classes and input_shape; the rest are options
    return {
        p.name: p.default
        for p in params[2:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    }


def check_model_options(name: str, options: Any) -> None:
    """Raise, in the registries' one wording, if `options` names one model `name` does not take."""
    key, factory = resolve(name)
    fixed = tuple(list(inspect.signature(factory).parameters)[:2])  # num_classes, input_shape
    check_options("model", key, factory, options, fixed)


def build_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    seed: int = 0,
    checkpoint: str | Path | None = None,
    **options: Any,
) -> nn.Module:
    """A fresh model in eval mode, initialized under `seed`, optionally loaded from `checkpoint`.

    The global torch RNG state is the same after the call as before it, so building a
    model never shifts the randomness of the data, client or attack that follow.
    """
    key, factory = resolve(name)
    check_model_options(name, options)
    check_positive_int("num_classes", num_classes)
    check_int("seed", seed, low=0, high=2**63 - 1)
    shape = check_input_shape(key, input_shape)
    _check_model_size(key, factory, num_classes, shape, options)
    # fork only the CPU generator: construction happens on the CPU, and forking CUDA
    # generators would initialize CUDA as a side effect
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(num_classes, shape, **options)
        except RuntimeError as exc:  # the allocator's answer to weights larger than memory
            if "alloc" not in str(exc).lower():
                raise
            raise GradleakError(f"model {key!r} with options {options} does not fit in memory: "
                                f"{str(exc).splitlines()[0][:200]}") from None
    if not isinstance(model, nn.Module):
        raise GradleakError(f"model {key!r} returned {type(model).__name__}, not an nn.Module")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    log.debug("built model %s for input %s, %d classes, seed %d", key, shape, num_classes, seed)
    return model.eval()


def _check_model_size(key: str, factory: ModelFactory, num_classes: int, shape: tuple[int, ...],
                      options: dict[str, Any]) -> None:
    """Refuse a model whose weights exceed the machine's memory, measured on the meta device
    (shapes without storage) before anything is allocated."""
    from gradleak.memory import check_fits

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            probe = factory(num_classes, shape, **options)
        nbytes = sum(t.numel() * t.element_size() for t in [*probe.parameters(), *probe.buffers()])
    except GradleakError:
        raise
    except Exception:  # a factory the meta device cannot run: the real build says what is wrong
        return
    check_fits(f"model {key!r} with options {options}", nbytes, "choose smaller options")


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state_dict into `model` in place, all or nothing; returns `model`.

    Accepts a bare state_dict or a dict holding one under "state_dict" or
    "model_state_dict"; a uniform "module." prefix (DataParallel) is dropped. Every key
    and shape is checked before anything is copied, so a failed load leaves the model
    untouched.
    """
    path = Path(path)
    shown = repr(str(path))
    if not path.exists():
        raise GradleakError(f"checkpoint {shown} does not exist")
    if not path.is_file():
        raise GradleakError(f"checkpoint {shown} is not a file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip, EOF and runtime errors for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GradleakError(f"checkpoint {shown} cannot be read as a weights-only torch file: {first}") from None
    state = _unwrap(raw, shown)

    own = model.state_dict()
    if state and all(k.startswith(_PARALLEL_PREFIX) for k in state) and not any(
        k.startswith(_PARALLEL_PREFIX) for k in own
    ):
        state = {k[len(_PARALLEL_PREFIX):]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    if missing:
        raise GradleakError(
            f"checkpoint {shown} does not fit the model: key {missing[0]!r} (shape {tuple(own[missing[0]].shape)}) "
            f"is missing from the file ({len(missing)} missing key(s) in all)"
        )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise GradleakError(
            f"checkpoint {shown} does not fit the model: key {unexpected[0]!r} (shape "
            f"{tuple(state[unexpected[0]].shape)}) is not in the model ({len(unexpected)} unexpected key(s) in all)"
        )
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise GradleakError(
                f"checkpoint {shown} does not fit the model: {key!r} has shape {tuple(state[key].shape)} "
                f"in the file, the model expects {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)
    log.debug("loaded checkpoint %s (%d tensors)", path, len(state))
    return model


def _unwrap(raw: object, shown: str) -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded checkpoint, checked to map strings to tensors."""
    if isinstance(raw, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping):
        raise GradleakError(f"checkpoint {shown} holds a {type(raw).__name__}; expected a state_dict "
                            f"(a dict of tensors, bare or under {' or '.join(map(repr, _WRAPPER_KEYS))})")
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise GradleakError(f"checkpoint {shown}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                                f"expected a state_dict (a dict of tensors, bare or under "
                                f"{' or '.join(map(repr, _WRAPPER_KEYS))})")
    return dict(raw)


def output_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of model outputs for one input of `input_shape` (run on a private copy)."""
    probe = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            out = probe(torch.zeros(1, *input_shape, device=next((p.device for p in probe.parameters()), None)))
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise GradleakError(
            f"input_shape {tuple(input_shape)} does not fit the model: {str(exc).splitlines()[0]}"
        ) from None
    return int(out.reshape(1, -1).shape[1])

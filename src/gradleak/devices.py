"""Where tensors live: one way to name a device, and what this machine has.

`resolve_device("auto")` is the first CUDA device if there is one, else Apple's MPS, else
the CPU; "cpu", "cuda", "cuda:N", "mps" and `torch.device` objects are taken as they are,
and a device this machine does not have is refused with the list of those it has. The
library follows the model's device (`model_device`); the faces (API, CLI, sweeps, Flower)
move the model there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import GradleakError

DEVICE_KINDS = ("auto", "cpu", "cuda", "cuda:N", "mps")


def available_devices() -> list[str]:
    """The devices this machine can run on, CPU first."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """A `torch.device` this machine has, from a name (see the module docstring)."""
    if spec is None:
        spec = "auto"
    name = check_device_spec(spec)
    have = available_devices()
    if name == "auto":
        return torch.device(next((d for d in have if d != "cpu"), "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GradleakError(f"device must be one of {', '.join(DEVICE_KINDS)}, got {spec!r}") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    if str(device) not in have and not (device.type == "mps" and "mps" in have):
        raise GradleakError(f"device {name!r} is not on this machine; it has {', '.join(have)}")
    return device


def check_device_spec(spec: object, name: str = "device") -> str:
    """A device name's spelling (not whether this machine has it: a sweep's driver may lack the
    GPUs its workers have); returns it normalized."""
    text = str(spec).strip().lower() if isinstance(spec, (str, torch.device)) else None
    ok = text is not None and (text in ("auto", "cpu", "cuda", "mps") or (
        text.startswith("cuda:") and text[5:].isdigit()))
    if not ok:
        raise GradleakError(f"{name} must be one of {', '.join(DEVICE_KINDS)}, got {spec!r}")
    return text


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A seeded generator on `device`: same seed, same device, same numbers."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@dataclass(frozen=True)
class Speed:
    """Speed settings of the accelerator, each off where it could change results.

    tf32: TensorFloat-32 matrix products and convolutions on GPUs that have them (about
        10 significant bits in the products; fast, and results differ from float32's).
    cudnn_benchmark: let cuDNN time its algorithms for each fixed shape (the attack's
        shapes never change), at the cost of bitwise reproducibility between runs.
    """

    tf32: bool = False
    cudnn_benchmark: bool = False

    def apply(self) -> None:
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


def describe() -> list[dict]:
    """One row per device: name and total memory (for `gradleak doctor`)."""
    rows = [{"device": "cpu", "name": "CPU", "threads": torch.get_num_threads()}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append({"device": f"cuda:{i}", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}"})
    if "mps" in available_devices():
        rows.append({"device": "mps", "name": "Apple MPS"})
    return rows


__all__ = ["DEVICE_KINDS", "Speed", "available_devices", "check_device_spec", "describe", "generator", "model_device",
           "resolve_device"]

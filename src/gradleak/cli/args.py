"""Argument types and helpers every command shares: KEY=VALUE options, seeds, threads,
output folders, and the deprecation notes of renamed flags."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError

log = logging.getLogger("gradleak.cli")


def kv(text: str) -> tuple[str, Any]:
    """Parse `key=value` with YAML scalars (numbers, booleans, lists)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value else None
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip().replace("-", "_"), parsed


def options(pairs: list[tuple[str, Any]] | None, flag: str) -> dict[str, Any]:
    """KEY=VALUE pairs as a mapping; a key given twice is refused (the last would silently win)."""
    out: dict[str, Any] = {}
    for key, value in pairs or []:
        if key in out:
            raise GradleakError(f"{flag} {key}= is given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def add_seed(parser, help: str = "seed of the model, data draw and client (default 0)",
             default: int | None = 0) -> None:
    # validated by the library (check_seed), so every command words a bad seed the same way
    parser.add_argument("--seed", type=int, default=default, help=help)


def add_device(parser, default: str | None = "auto", what: str = "the attack, defenses and metrics") -> None:
    """--device: where `what` run (auto: the first GPU, else MPS, else the CPU)."""
    parser.add_argument("--device", default=default,
                        help=f"where {what} run: auto (the first GPU, else MPS, else the CPU), cpu, cuda, cuda:N, mps"
                             + (f" (default {default})" if default else " (default auto)"))


def set_threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        if threads < 1:
            raise GradleakError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def output_folder(text: str | None, default: Path, *, overwrite: bool) -> Path:
    """The output folder: refused now, before any work, when it cannot be written."""
    from gradleak.io import check_writable_folder

    if text is not None and not text.strip():
        raise GradleakError("-o/--out must name a folder, got an empty string")
    out = Path(text) if text else default
    check_writable_folder(out, overwrite=overwrite)
    return out


def output_file(text: str | None, flag: str = "-o/--out", *, exists_ok: bool = True) -> Path | None:
    """An output file: refused now when it cannot be written (its folder missing or read-only)."""
    from gradleak.io import check_writable_file

    if text is None:
        return None
    if not text.strip():
        raise GradleakError(f"{flag} must name a file, got an empty string")
    path = Path(text)
    check_writable_file(path, flag, exists_ok=exists_ok)
    return path


def deprecated(old: str, new: str) -> str:
    """The help text of a renamed flag that still works for one release."""
    return f"deprecated: use {new}; {old} will be removed in the next release"


def warn_deprecated(old: str, new: str) -> None:
    log.warning("%s is deprecated: use %s (it will be removed in the next release)", old, new)


__all__ = ["add_seed", "deprecated", "kv", "options", "output_file", "output_folder", "set_threads",
           "warn_deprecated"]

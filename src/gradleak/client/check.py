"""A client's check of the model it receives, before it trains on it.

Threat model: the client defends against a malicious server (assumption level 5) with
nothing but the model it received, its own data and, optionally, the architecture it
expects and digests of what other clients received. Recent work argues an effective
malicious model cannot stay inconspicuous (Wang & Li 2025, "Hear No Evil"; Carletti et
al. 2025 on detecting active attacks); this check reads the parameter statistics that
the known constructions cannot avoid (our own statistics, written from those constructions):

- `architecture`: parameter names and shapes against the expected model (an imprint or
  LOKI block in front of the model changes them);
- `collinear`: a group of rows (units) of one layer pointing the same way (|cos| near 1):
  the imprint / LOKI bins all measure one linear function, at a ladder of biases;
- `disabled`: rows of zero weights and a negative bias, which never fire (LOKI's other
  clients' rows);
- `rare`: units of the first layer that fire (pre-activation > 0) for almost none of the
  client's own data (trap weights fire for ~1 / batch of it);
- `quiet`: the same units silent for most of the client's data on average (trap weights
  tuned to fire for 1 / batch: with a batch of 8 many fire for one sample, not none);
- `scale`: the last linear layer's row norms far apart (max / min), which training from
  a standard initialization does not produce (fishing shrinks every class but one).

`check_model` returns a `ModelCheck`: every statistic with its threshold (so margins can
be reported) and the verdict with its reasons. `model_digest` is what clients compare to
notice that they received different models (secure aggregation does not).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn

from gradleak.checks import check_number, check_positive_int
from gradleak.errors import GradleakError


MIN_ROW_SIZE = 4  # rows of fewer inputs are collinear by chance (1 input: always): not read


@dataclass(frozen=True)
class CheckThresholds:
    """Where each statistic turns suspicious (see the module docstring)."""

    collinear_cos: float = 0.99  # |cos| of two rows above this: collinear
    collinear_group: int = 3  # this many collinear rows in one layer: flagged
    disabled_rows: int = 2  # this many never-firing zero rows in one layer: flagged
    rare_fire: float = 0.05  # a first-layer unit firing for less than this share of the data is rare
    rare_share: float = 0.5  # this share of the first layer's units rare: flagged
    quiet: float = 0.8  # the first layer's units silent for this share of the data on average: flagged
    scale_ratio: float = 20.0  # last layer: max row norm / min row norm above this: flagged

    def __post_init__(self) -> None:
        check_number("collinear_cos", self.collinear_cos, low=0, high=1, low_open=True, high_open=True)
        check_positive_int("collinear_group", self.collinear_group)
        check_positive_int("disabled_rows", self.disabled_rows)
        check_number("rare_fire", self.rare_fire, low=0, high=1, low_open=True, high_open=True)
        check_number("rare_share", self.rare_share, low=0, high=1, low_open=True)
        check_number("quiet", self.quiet, low=0, high=1, low_open=True)
        check_number("scale_ratio", self.scale_ratio, low=1, low_open=True)


@dataclass(frozen=True)
class Finding:
    """One statistic of one layer: flagged when `value` reaches `threshold`."""

    check: str
    layer: str
    value: float
    threshold: float
    detail: str = ""

    @property
    def flagged(self) -> bool:
        return self.value >= self.threshold


@dataclass(frozen=True)
class ModelCheck:
    """The verdict: `suspicious` when any finding is flagged; `reasons` say which and why."""

    findings: tuple[Finding, ...]
    reasons: tuple[str, ...] = field(default=())

    @property
    def suspicious(self) -> bool:
        return bool(self.reasons)

    def worst(self, check: str) -> Finding | None:
        """The finding of kind `check` nearest to (or furthest past) its threshold."""
        of = [f for f in self.findings if f.check == check]
        return max(of, key=lambda f: f.value / f.threshold) if of else None


def _rows(module: nn.Module) -> torch.Tensor | None:
    w = getattr(module, "weight", None)
    if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or not isinstance(w, torch.Tensor):
        return None
    return w.detach().double().flatten(1)


def collinear_group(rows: torch.Tensor, cos: float) -> tuple[int, float]:
    """(largest number of nonzero rows collinear with one row, largest |cos| of two distinct rows)."""
    norms = rows.norm(dim=1)
    live = rows[norms > 1e-12 * float(norms.max().clamp_min(1e-300))]
    if len(live) < 2:
        return len(live), 0.0
    unit = live / live.norm(dim=1, keepdim=True)
    c = (unit @ unit.T).abs()
    c.fill_diagonal_(0.0)
    return int((c > cos).sum(1).max()) + 1, float(c.max())


def disabled_rows(module: nn.Module) -> int:
    """Rows with zero weights and a negative bias: units that never fire."""
    rows, bias = _rows(module), getattr(module, "bias", None)
    if rows is None or not isinstance(bias, torch.Tensor):
        return 0
    return int(((rows.abs().sum(1) == 0) & (bias.detach() < 0)).sum())


def _trace(model: nn.Module, images: torch.Tensor) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The parameterized modules in call order, and the first one's output."""
    probe = copy.deepcopy(model).eval()
    calls: list[str] = []
    outputs: dict[str, torch.Tensor] = {}
    for name, module in probe.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            def hook(mod, args, out, _name=name):
                calls.append(_name)
                if len(calls) == 1 and isinstance(out, torch.Tensor):
                    outputs[_name] = out.detach()
            module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            probe(images)
    except Exception as exc:  # the received model does not take the client's data: that is a finding too
        raise GradleakError(f"the received model does not take the client's images {tuple(images.shape)}: "
                            f"{exc}") from exc
    return list(dict.fromkeys(calls)), outputs


def check_model(model: nn.Module, images: torch.Tensor, *, expected: nn.Module | None = None,
                thresholds: CheckThresholds = CheckThresholds()) -> ModelCheck:
    """Check `model` (not modified) against the client's own `images` (model space)."""
    if not isinstance(model, nn.Module):
        raise GradleakError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] < 1:
        raise GradleakError(f"images must be a tensor (N, ...) with N >= 1, got {type(images).__name__}")
    t = thresholds
    findings: list[Finding] = []
    if expected is not None:
        got = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
        want = [(n, tuple(p.shape)) for n, p in expected.named_parameters()]
        diff = next((f"{a} vs expected {b}" for a, b in zip(got, want) if a != b), None)
        if diff is None and len(got) != len(want):
            diff = f"{len(got)} parameter tensors vs expected {len(want)}"
        findings.append(Finding("architecture", "", float(diff is not None), 1.0, diff or ""))
    modules = dict(model.named_modules())
    calls, outputs = _trace(model, images)
    for name in calls:
        rows = _rows(modules[name])
        if rows is None:
            continue
        if rows.shape[0] >= t.collinear_group and rows.shape[1] >= MIN_ROW_SIZE:
            group, top = collinear_group(rows, t.collinear_cos)
            findings.append(Finding("collinear", name, float(group), float(t.collinear_group),
                                    f"largest |cos| between two rows {top:.4f}"))
        findings.append(Finding("disabled", name, float(disabled_rows(modules[name])), float(t.disabled_rows)))
    if calls and calls[0] in outputs:
        out = outputs[calls[0]]
        dims = [d for d in range(out.dim()) if d != 1] if out.dim() > 2 else [0]
        fire = (out > 0).double().mean(dims)
        if fire.numel() >= 4:
            share = float((fire < t.rare_fire).double().mean())
            findings.append(Finding("rare", calls[0], share, t.rare_share,
                                    f"{int((fire < t.rare_fire).sum())} of {fire.numel()} units fire for under "
                                    f"{t.rare_fire:g} of {images.shape[0]} samples"))
            findings.append(Finding("quiet", calls[0], 1.0 - float(fire.mean()), t.quiet,
                                    f"its units fire for {float(fire.mean()):.3f} of the client's data on average"))
    last = next((n for n in reversed(calls) if isinstance(modules[n], nn.Linear)), None)
    if last is not None and modules[last].out_features >= 2:
        norms = _rows(modules[last]).norm(dim=1)
        ratio = 1.0 if float(norms.max()) == 0 else float(norms.max() / norms.min().clamp_min(1e-300))
        findings.append(Finding("scale", last, ratio, t.scale_ratio, f"row norms {float(norms.min()):.3g} .. "
                                f"{float(norms.max()):.3g}"))
    reasons = tuple(f"{f.check}{' ' + repr(f.layer) if f.layer else ''}: {f.value:g} >= {f.threshold:g}"
                    f"{' (' + f.detail + ')' if f.detail else ''}" for f in findings if f.flagged)
    return ModelCheck(findings=tuple(findings), reasons=reasons)


def model_digest(model: nn.Module) -> str:
    """SHA-256 of the model's parameter and buffer names, shapes and values: clients that
    compare digests notice when the server sent them different models."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = ["CheckThresholds", "Finding", "ModelCheck", "check_model", "collinear_group", "disabled_rows",
           "model_digest"]

"""The pieces every optimization attack shares: restart seeds and starts, running restarts
together or one after another, the pixel box, and the labels an attack starts from."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from gradleak.attacks.engine.labels import recover_labels
from gradleak.attacks.engine.problem import Layout
from gradleak.attacks.engine.stopping import Halving, LoopResult, OnStep
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge, LabelKnowledge

ACCELERATOR_SYNC_EVERY = 16  # steps between loss read-backs on a GPU (the CPU reads every step)


def sync_every_for(option: int | None, device: torch.device) -> int:
    """Steps between loss read-backs: the option, else 1 on the CPU (reading there costs nothing
    measurable) and `ACCELERATOR_SYNC_EVERY` on accelerators (each read stalls the device)."""
    if option is not None:
        return option
    return 1 if device.type == "cpu" else ACCELERATOR_SYNC_EVERY


def restart_seeds(seed: int, restarts: int) -> list[int]:
    """Independent per-restart seeds derived from one seed (SeedSequence spawning)."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(restarts)]


def check_halving(value: object) -> Halving | None:
    """None, a `Halving`, or a sequence of budget fractions (keep half at each)."""
    if value is None or isinstance(value, Halving):
        return value
    try:
        return Halving(at=tuple(float(f) for f in value))
    except (TypeError, ValueError) as exc:  # GradleakError is a ValueError: reworded with the argument's name
        raise GradleakError(f"halving must be None or budget fractions in (0, 1) such as (0.25, 0.5), "
                            f"got {value!r}") from exc


def run_restarts(
    run: Callable[[torch.Tensor, OnStep | None], LoopResult],
    start: torch.Tensor,
    layout: Layout,
    *,
    together: bool,
    on_step: OnStep | None,
) -> LoopResult:
    """Run the loop on all rows at once, or one row after another until one converges.

    One after another, a restart that converged, was stopped or ran out of time ends
    the attack, and the restarts never started are not reported. The callback sees
    the restart's data, not its raw row.
    """
    def report(it: int, r: int, loss: float, running: int, row: torch.Tensor) -> bool:
        return on_step(it, r, loss, running, layout.data(row[None])[0]) if on_step is not None else False

    if together:
        return run(start, report)
    parts: list[LoopResult] = []
    for r in range(start.shape[0]):
        def local(it: int, _i: int, loss: float, running: int, row: torch.Tensor, _r: int = r) -> bool:
            return report(it, _r, loss, running, row)

        part = run(start[r : r + 1], local)
        parts.append(part)
        if part.statuses[0] in ("converged", "stopped", "budget"):
            break
    return LoopResult(
        best=torch.cat([p.best for p in parts]),
        losses=tuple(x for p in parts for x in p.losses),
        iterations=tuple(x for p in parts for x in p.iterations),
        statuses=tuple(x for p in parts for x in p.statuses),
        histories=tuple(x for p in parts for x in p.histories),
    )


def dummy_data(knowledge: AttackerKnowledge, generator: torch.Generator) -> torch.Tensor:
    """Random normal start in model space, one per sample."""
    shape = (knowledge.num_samples, *knowledge.input_shape)
    return torch.randn(shape, generator=generator, device=generator.device)


def box_projection(layout: Layout, knowledge: AttackerKnowledge) -> Callable[[torch.Tensor], None] | None:
    """In-place projection of the rows' data onto the valid pixel box, or None when unknown."""
    if knowledge.bounds is None:
        return None
    low = torch.tensor(knowledge.bounds[0], dtype=torch.float32, device=layout.device)
    high = torch.tensor(knowledge.bounds[1], dtype=torch.float32, device=layout.device)
    if len(layout.input_shape) == 3 and low.numel() == layout.input_shape[0]:
        low, high = low.reshape(-1, 1, 1), high.reshape(-1, 1, 1)
    else:  # per-channel bounds only make sense for images: fall back to the widest box
        low, high = low.min(), high.max()

    def project(rows: torch.Tensor) -> None:
        with torch.no_grad():
            data = layout.data(rows)
            clamped = torch.maximum(torch.minimum(data, high.to(data.dtype)), low.to(data.dtype))
            rows[:, : layout.data_size] = clamped.reshape(rows.shape[0], -1)

    return project


def known_or_inferred_labels(problem, knowledge: AttackerKnowledge, rule: str = "auto") -> torch.Tensor:
    """Labels handed to the attacker, else recovered from the update's last layer by `rule`."""
    if knowledge.label_knowledge is LabelKnowledge.GIVEN:
        return knowledge.labels.detach().long().reshape(-1)
    return recover_labels(problem.model, problem.gradient_view, knowledge.num_samples, knowledge.input_shape, rule)

"""What a federation audit shows: per-round rows, correlations, the plot and the files.

`summarize` reduces the audits to one row per round (mean over audited clients) and
Spearman correlations: IGSA vs PSNR across audits (does the smoothness score track
attack success?) and round vs PSNR (does leakage fall as training advances?).
`write_federation` writes a folder: audits.jsonl, federation.json, leakage.png and one
reconstruction grid per audit.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from gradleak.flower.federation import FederationResult
from gradleak.flower.records import ClientAudit
from gradleak.records.verdict import worst


@dataclass(frozen=True)
class RoundRow:
    server_round: int
    verdict: str | None  # the round's worst verdict over its audited clients (None without truth)
    accuracy: float  # of the global model the round started from
    psnr: float | None
    ssim: float | None
    identified: float | None  # fraction of reconstructions whose PSNR-nearest neighbour is the true image
    igsa: float | None
    audits: int


@dataclass(frozen=True)
class FederationSummary:
    rows: tuple[RoundRow, ...]
    spearman_igsa_psnr: float | None
    spearman_round_psnr: float | None
    first_round_identified: float | None
    audit_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"rounds": [r.__dict__ for r in self.rows], "spearman_igsa_psnr": self.spearman_igsa_psnr,
                "spearman_round_psnr": self.spearman_round_psnr,
                "first_round_identified": self.first_round_identified,
                "audit_seconds": round(self.audit_seconds, 2)}


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def identified_rate(audit: ClientAudit, metric: str = "psnr") -> float | None:
    for found in audit.identification:
        if found.metric == metric:
            return found.rate
    return None


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties averaged); None below 3 pairs or without spread."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)


def summarize(result: FederationResult) -> FederationSummary:
    by_round: dict[int, list[ClientAudit]] = {}
    for a in result.audits:
        by_round.setdefault(a.server_round, []).append(a)
    rows = []
    for r, audits in sorted(by_round.items()):
        verdicts = [a.verdict.overall for a in audits if a.verdict is not None]
        rows.append(RoundRow(r, worst(verdicts).value if verdicts else None, result.accuracy[r - 1],
                             _mean([a.psnr for a in audits]),
                             _mean([a.metrics.ssim_mean if a.metrics else None for a in audits]),
                             _mean([identified_rate(a) for a in audits]), _mean([a.igsa for a in audits]),
                             len(audits)))
    scored = [a for a in result.audits if a.psnr is not None]
    first = by_round.get(1, [])
    return FederationSummary(
        rows=tuple(rows),
        spearman_igsa_psnr=spearman([a.igsa for a in scored], [a.psnr for a in scored]),
        spearman_round_psnr=spearman([a.server_round for a in scored], [a.psnr for a in scored]),
        first_round_identified=_mean([identified_rate(a) for a in first]),
        audit_seconds=sum(a.audit_seconds for a in result.audits),
    )


def leakage_plot_png(result: FederationResult, title: str | None = None) -> bytes:
    """Attack PSNR and identification per round above, accuracy and IGSA below (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarize(result)
    fig = Figure(figsize=(7, 6), constrained_layout=True)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    clients = sorted({a.client or str(a.node_id) for a in result.audits})
    for client in clients:
        pts = [(a.server_round, a.psnr) for a in result.audits if (a.client or str(a.node_id)) == client
               and a.psnr is not None]
        if pts:
            top.plot(*zip(*pts), marker="o", label=f"client {client} PSNR")
    top.axhline(18.0, color="grey", linestyle=":", linewidth=1, label="18 dB (SoK leak threshold)")
    top.set_ylabel("attack PSNR (dB)")
    ident = [(r.server_round, r.identified) for r in summary.rows if r.identified is not None]
    if ident:
        twin = top.twinx()
        twin.bar([p[0] for p in ident], [p[1] for p in ident], width=0.35, alpha=0.25, color="tab:green",
                 label="identified (PSNR-nearest = true)")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("identified fraction")
        twin.legend(loc="upper right", fontsize=8)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(range(len(result.accuracy)), result.accuracy, marker="s", color="black", label="test accuracy")
    bottom.set_ylabel("test accuracy")
    bottom.set_xlabel("round (accuracy at 0: the initial model; audits attack the model a round starts from)")
    bottom.set_ylim(0, 1.02)
    igsa = [(r.server_round, r.igsa) for r in summary.rows if r.igsa is not None]
    if igsa:
        twin = bottom.twinx()
        twin.plot(*zip(*igsa), marker="^", color="tab:purple", label="IGSA")
        twin.set_ylabel("IGSA (higher: smoother)")
        twin.legend(loc="lower right", fontsize=8)
    bottom.legend(loc="lower left", fontsize=8)
    bottom.grid(alpha=0.3)
    c = result.config
    fig.suptitle(title or f"{c.model} on {c.dataset}: {c.clients} clients, {c.attack}, "
                 f"{'knows' if c.knows_training else 'does not know'} the local configuration", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_federation(result: FederationResult, out: str | Path) -> Path:
    """Write the run's folder (replacing `out` atomically): audits.jsonl, federation.json,
    leakage.png, and reconstructions/round-R-client-C.png when images were kept."""
    from gradleak.io import write_folder
    from gradleak.pipelines.figures import grid_png

    summary = summarize(result)

    def fill(tmp: Path) -> None:
        lines = [json.dumps(a.to_json()) for a in result.audits]
        (tmp / "audits.jsonl").write_text("".join(line + "\n" for line in lines))
        (tmp / "federation.json").write_text(json.dumps({
            "config": result.config.to_dict(), "accuracy": list(result.accuracy),
            "seconds": round(result.seconds, 2), "summary": summary.to_json()}, indent=2))
        if result.audited:
            (tmp / "leakage.png").write_bytes(leakage_plot_png(result))
        for a in result.audits:
            if a.reconstruction is None:
                continue
            rec = a.reconstruction
            grid = grid_png(a.original if a.original is not None else rec, rec,
                            psnr=None if a.metrics is None else list(a.metrics.psnr),
                            title=(f"{a.verdict.overall.value.upper()} - " if a.verdict is not None else "")
                            + f"round {a.server_round}, client {a.client or a.node_id}")
            (tmp / "reconstructions").mkdir(exist_ok=True)
            (tmp / "reconstructions" / f"round-{a.server_round:03d}-client-{a.client or a.node_id}.png").write_bytes(grid)

    return write_folder(out, fill)

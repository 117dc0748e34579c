"""Markdown tables of the SoK recipes' stores, one row per setting (for experiments/README.md).

    python experiments/sok/tables.py runs/sok-table1.sqlite [runs/...]

Columns: the setting's axes, cells, PSNR and shift-tolerant LPIPS (mean +- std over cells),
BRR and WSRR (PSNR >= 18 dB and perceptual <= 0.1), and the mean attack time.
"""

from __future__ import annotations

import sys

from gradleak.sweep.axes import format_value
from gradleak.sweep.store import ResultStore
from gradleak.sweep.summary import summarize


def table(path: str) -> str:
    with ResultStore(path, create=False) as store:
        summary = summarize(store.rows(), specs=list(store.sweeps().values()))
    axes = [a.name for a in summary.axes if not a.replicate and len(a.values) > 1]
    head = axes + ["cells", "PSNR dB", "stLPIPS", "BRR", "WSRR", "attack s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for setting in summary.settings:
        values = dict(setting.values)
        stats = {m.metric: m.cells for m in setting.metrics}

        def cell(name: str, digits: int) -> str:
            s = stats.get(name)
            return "" if s is None else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"

        times = [r.timings.get("attack_s", 0.0) for r in setting.done]
        leak = setting.leak
        row = [format_value(values.get(a)) for a in axes] + [
            str(len(setting.done)), cell("psnr", 1), cell("stlpips", 3),
            "" if leak is None else f"{leak.brr:.0%}", "" if leak is None else f"{leak.wsrr:.0%}",
            f"{sum(times) / max(len(times), 1):.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"\n{p}\n\n{table(p)}")

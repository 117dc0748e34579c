"""Three runs of the same audited federation give identical audits.

    python experiments/flower/reproducible.py      # 3 x (4 clients, 3 rounds); about 3 minutes

Flower gives clients new random node ids every run; the audit seeds its attacks by the
client's stable identity (its name in the truth), so every audit repeats bit for bit. The
rows (round, client, verdict, PSNR, node id) of each run go to reproducible.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gradleak.flower import FederationConfig, run_federation

OUT = Path(__file__).with_name("reproducible.jsonl")


def main() -> None:
    torch.set_num_threads(1)
    config = FederationConfig(rounds=3, igsa_samples=0)
    runs = [run_federation(config) for _ in range(3)]
    rows = [{"run": i, "server_round": a.server_round, "client": a.client, "node_id": a.node_id,
             "verdict": a.verdict.overall.value, "psnr": a.psnr,
             "reconstruction_sum": float(a.reconstruction.double().sum())}
            for i, run in enumerate(runs) for a in run.audits]
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = runs[0].audits
    identical = all(
        a.metrics.values == b.metrics.values and torch.equal(a.reconstruction, b.reconstruction)
        for run in runs[1:] for a, b in zip(first, run.audits, strict=True))
    nodes = {a.node_id for run in runs for a in run.audits}
    print(f"{len(first)} audits per run; identical across 3 runs: {identical}; distinct node ids seen: "
          f"{len(nodes)}; PSNR by round: {[round(a.psnr, 2) for a in first]}")


if __name__ == "__main__":
    main()

"""Summarize the `gradleak sweep` of experiments/secagg/cli_aggregate.yaml (the `--clients N
--secure-aggregation` path of `gradleak attack`): per attack and N, the fraction of all N x 8
samples recovered at >= 18 dB and >= 40 dB, and the mean per-client fraction at >= 40 dB.

    OMP_NUM_THREADS=1 PYTHONPATH=src python -m gradleak.cli sweep experiments/secagg/cli_aggregate.yaml \\
        --store /tmp/secagg_clients.sqlite -q
    python experiments/secagg/cli_aggregate.py /tmp/secagg_clients.sqlite
Writes experiments/secagg/cli_aggregate.jsonl and cli_aggregate.md.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parent
PER = 8


def main(store: str) -> None:
    rows = sqlite3.connect(store).execute("select axes, per_sample, timings, status from cells").fetchall()
    groups = defaultdict(list)
    for axes, per_sample, timings, status in rows:
        a = json.loads(axes)
        assert status == "done", (a, status)
        groups[(a["attack"], a["server"] or "honest", a["clients"])].append(
            (json.loads(per_sample)["psnr"], json.loads(timings)["total_s"]))
    out, md = [], ["# Attacks on the secure aggregate of N clients x 8 digits (MLP, FedSGD), via `gradleak sweep`",
                   "", "Commands: see `cli_aggregate.py` (sweep file `cli_aggregate.yaml`, seeds 0-2). "
                   "'>= 18 dB' is the fraction of all N x 8 samples (the BRR's PSNR part; no LPIPS here); "
                   "'per client' is the mean over clients of each client's fraction at >= 40 dB.", "",
                   "| attack | server | clients | samples | seeds | >= 18 dB | >= 40 dB | per client >= 40 dB (min-max) | "
                   "s per run |", "|---|---|---|---|---|---|---|---|---|"]
    for (attack, server, n), runs in sorted(groups.items()):
        psnr = [p for r, _ in runs for p in r]
        per_client = [sum(q >= 40 for q in r[j * PER:(j + 1) * PER]) / PER for r, _ in runs for j in range(n)]
        row = {"attack": attack, "server": server, "clients": n, "samples": n * PER, "seeds": len(runs),
               "recovered_18": sum(p >= 18 for p in psnr) / len(psnr),
               "recovered_40": sum(p >= 40 for p in psnr) / len(psnr),
               "per_client_40_mean": sum(per_client) / len(per_client), "per_client_40_min": min(per_client),
               "per_client_40_max": max(per_client), "seconds": sum(t for _, t in runs) / len(runs)}
        out.append(row)
        md.append(f"| {attack} | {server.split(',')[0]} | {n} | {n * PER} | {len(runs)} | {row['recovered_18']:.3f} | "
                  f"{row['recovered_40']:.3f} | {row['per_client_40_mean']:.3f} ({row['per_client_40_min']:.2f}-"
                  f"{row['per_client_40_max']:.2f}) | {row['seconds']:.1f} |")
    (OUT / "cli_aggregate.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    (OUT / "cli_aggregate.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1])

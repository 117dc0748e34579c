"""A Flower federation of 4 clients, 3 rounds, the server malicious (trap weights) in round 2:
audited without and with the client's check as a client mod.

Run (from the repository root; Flower's Ray simulation, minutes on a shared core):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/flower_redteam.py
Writes experiments/secagg/flower_redteam.jsonl and flower_redteam.md.

Federation: built-in faces, MLP (256, 256), 4 IID clients, each round 8 fresh images per
client, one local step of batch 8 (lr 0.1). Round 2: `RedTeam` sends every client
trap weights (fire 1/8, biases fitted to the test split) in the MLP's first layer; the
training stays honest (each reply is mapped back onto the global model). Every client's
update is attacked with the trap read-out every round (`LeakageAudit`). With the mod,
each client checks the received model on its own partition before it trains.
Not done: Flower's SecAgg+ workflow (the audit here reads each client's update; the
aggregate is simulated in `gradleak.client.aggregate` instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gradleak.flower import FederationConfig
from gradleak.flower.redteam import run_red_team

OUT = Path(__file__).resolve().parent


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--per", type=int, default=8, help="images per client per round (one local step)")
    parser.add_argument("--server", default="trap:fire=0.125")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stem = "flower_redteam" if args.per == 8 else f"flower_redteam_{args.per}"
    config = FederationConfig(dataset="faces", model="mlp", clients=4, rounds=3, samples_per_round=args.per,
                              local_epochs=1, local_batch_size=args.per, lr=0.1, audit_clients=(0, 1, 2, 3), attack="trap", igsa_samples=0)
    rows, md = [], [f"# Red-teamed Flower federation: {args.server} in round 2 (faces, MLP, 4 clients x {args.per} "
                    "images per round, one local step)", "",
                    f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/flower_redteam.py --per "
                    f"{args.per} --server {args.server}`", "",
                    "| client mod | round | audited updates | samples >= 40 dB | samples >= 18 dB | refusals | "
                    "accuracy after the round |", "|---|---|---|---|---|---|---|"]
    for mod in (False, True):
        out = run_red_team(config, server=args.server, rounds=[2], attack="trap", client_check=mod)
        res = out.result
        for r in range(1, config.rounds + 1):
            audits = [a for a in res.audits if a.server_round == r]
            psnr = [p for a in audits if a.metrics is not None for p in a.metrics.psnr]
            refusals = [x for x in out.refusals if x[0] == r]
            row = {"client_mod": mod, "round": r, "audited": len(audits), "samples": len(psnr),
                   "psnr": psnr, "leak_40": sum(p >= 40 for p in psnr), "leak_18": sum(p >= 18 for p in psnr),
                   "refusals": [x[2] for x in refusals], "accuracy": res.accuracy[r], "seconds": res.seconds}
            rows.append(row)
            md.append(f"| {'on' if mod else 'off'} | {r} | {len(audits)} | {row['leak_40']} of {len(psnr)} | "
                      f"{row['leak_18']} of {len(psnr)} | {len(refusals)} | {res.accuracy[r]:.3f} |")
        with open(OUT / f"{stem}.jsonl", "a" if mod else "w") as f:
            for row in rows[-config.rounds:]:
                f.write(json.dumps(row) + "\n")
        reasons = sorted({x[2] for x in out.refusals})
        if reasons:
            md += ["", f"Refusal reasons (mod on): {reasons[0][:300]}", ""]
    (OUT / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()

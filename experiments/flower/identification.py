"""Identification on the untrained model: round 1 of the example federation, every client
audited, several seeds (model initialization, partitions and draws), per architecture.

    python experiments/flower/identification.py  # about 8 minutes on 2 CPU cores

Appends one JSON line per audited client to identification.jsonl and prints the rate at
which the PSNR- (and SSIM-) nearest neighbour in the client's partition is the true image.
"""

import json
import sys
import time
from pathlib import Path

import torch

from gradleak.flower import FederationConfig, run_federation

MODELS = {"mlp": {}, "lenet": {}}
SEEDS = range(5)
OUT = Path(__file__).with_name("identification.jsonl")


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for model, options in MODELS.items():
        for seed in SEEDS:
            t = time.perf_counter()
            config = FederationConfig(model=model, model_options=options, rounds=1, audit_clients=(0, 1, 2, 3),
                                      seed=seed, igsa_samples=0)
            result = run_federation(config)
            for a in result.audits:
                by = {i.metric: i for i in a.identification}
                rows.append({"model": model, "seed": seed, "client": a.client, "psnr": a.psnr,
                             "identified_psnr": by["psnr"].identified[0], "identified_ssim": by["ssim"].identified[0],
                             "true_rank_psnr": by["psnr"].true_rank[0], "candidates": 40,
                             "nearest_psnr": by["psnr"].nearest_score[0], "runner_up_psnr": by["psnr"].runner_up_score[0]})
            print(model, seed, f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        for metric in ("psnr", "ssim"):
            rate = sum(r[f"identified_{metric}"] for r in mine) / len(mine)
            print(f"{model}: {metric}-nearest is the true image in {rate:.0%} of {len(mine)} reconstructions")


if __name__ == "__main__":
    main()

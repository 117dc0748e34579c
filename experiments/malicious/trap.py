"""Trap weights (Boenisch et al. 2023) on the built-in photos at 32x32.

Run (from the repository root, about 5 minutes on one core):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/malicious/trap.py
Writes experiments/malicious/trap.jsonl and trap.md.

The client trains an MLP (flatten, Linear 3072 -> U, ReLU, Linear U -> 256, ReLU, head)
whose first layer the trap server set (each unit firing for `fire` = 2/batch of inputs,
biases from a Gaussian fitted to the photos test split, or assumed); FedSGD; the `trap`
attack reads the update; Hungarian matching on MSE; recovered = PSNR >= 40 dB (and 18).
`expected` is trap_expected(U, fire, batch), which treats units as independent.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data.registry import load_dataset
from gradleak.metrics import score_reconstruction
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge
from gradleak.server import parse_server, trap_expected

OUT = Path(__file__).resolve().parent


def run(batch: int, seed: int, units: int, public: bool, per_batch: float = 2.0) -> dict:
    data = load_dataset("photos", None, split="train")
    norm = data.normalization
    pub = norm.normalize(load_dataset("photos", None, split="test").images) if public else None
    model = build_model("mlp", num_classes=data.num_classes, input_shape=data.image_shape, seed=seed,
                        hidden=(units, 256))
    fire = min(0.4, per_batch / batch)
    server = parse_server(f"trap:fire={fire:.4g}").build(model, data.image_shape, seed=seed, public=pub)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:batch].tolist()
    images, labels = data.batch(idx)
    update = simulate_client(server.model, norm.normalize(images), labels, seed=seed)
    knowledge = AttackerKnowledge(num_samples=batch, input_shape=data.image_shape, num_classes=data.num_classes,
                                  server=server.spec, bounds=norm.bounds())
    t0 = time.perf_counter()
    rec = ATTACKS.create("trap", {}).reconstruct(server.model, update, knowledge, seed=seed)
    seconds = time.perf_counter() - t0
    psnr = torch.tensor(score_reconstruction(rec, images, normalization=norm, true_labels=labels).metrics.psnr)
    return {"batch": batch, "seed": seed, "units": units, "server": server.spec,
            "bias_estimate": "photos test split (fitted Gaussian)" if public else "assumed N(0,1) pixels",
            "recovered_40": float((psnr >= 40).float().mean()), "recovered_18": float((psnr >= 18).float().mean()),
            "expected": trap_expected(units, fire, batch), "attack_s": seconds,
            "assumptions": [int(a) for a in rec.assumptions]}


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    md = ["# Trap weights on photos 32x32 (MLP first layer of U units, FedSGD)", "",
          "| biases from | U | batch | seeds | recovered >= 40 dB | recovered >= 18 dB | expected (independent units) "
          "| attack s |", "|---|---|---|---|---|---|---|---|"]
    for public in (True, False):
        for units, batches in ((4000, (10, 25, 50, 100, 125)), (1000, (100,))):
            for batch in batches:
                part = [run(batch, s, units, public) for s in range(3)]
                rows += part
                md.append(f"| {part[0]['bias_estimate']} | {units} | {batch} | {len(part)} | "
                          f"{statistics.mean(r['recovered_40'] for r in part):.3f} | "
                          f"{statistics.mean(r['recovered_18'] for r in part):.3f} | {part[0]['expected']:.3f} | "
                          f"{statistics.mean(r['attack_s'] for r in part):.2f} |")
                print(md[-1], flush=True)
    with open(OUT / "trap.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (OUT / "trap.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()

"""Where SPEAR's exact recovery breaks under noise: Gaussian noise on the FedSGD update
(`gaussian:sigma=S`) and DP-SGD (`dpsgd:noise_multiplier=Z,max_grad_norm=C`: per-sample
clipping, then N(0, (Z C)^2) on the sum, divided by B), on the acceptance MLP (1,000 ReLU
units, built-in 32x32 photos, random weights); per cell, the worst sample's PSNR after
matching, certificates, and the attack's status (sampling capped at 15 s a batch).

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/spear/noise.py >> experiments/spear/noise.jsonl
    python experiments/spear/noise.py --summary experiments/spear/noise.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.defenses import ClientBatch, parse_defense
from gradleak.metrics.functional import psnr
from gradleak.metrics.matching import match
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LocalTraining

SIGMAS = (0.0, 1e-7, 1e-6, 3e-6, 1e-5)
DP = ((1e-5, 1.0), (1e-4, 1.0), (1e-3, 1.0))  # (noise multiplier, clip)
ZERO_TOLS = (None,)  # the default: dtype tolerance plus 4x the estimated noise floor


def one(b: int, seed: int, spec: str, zero_tol: float | None, budget: int) -> dict:
    ds = load_dataset("photos")
    shape = ds.image_shape
    model = build_model("mlp", num_classes=ds.num_classes, input_shape=shape, seed=seed, hidden=(1000,))
    gen = torch.Generator().manual_seed(10_000 * seed + b)
    x, y = ds.batch(torch.randperm(len(ds), generator=gen)[:b].tolist())
    xn = ds.normalization.normalize(x)
    update = simulate_client(model, xn, y)
    rms = float(torch.cat([t.flatten() for t in update.tensors[:2]]).pow(2).mean().sqrt())
    if spec:
        client = ClientBatch(model, xn, y, LocalTraining(), "eval", seed=seed)
        update = parse_defense(spec).transform(update, seed=seed, client=client)
    knowledge = AttackerKnowledge(num_samples=b, input_shape=shape, num_classes=ds.num_classes)
    start = time.perf_counter()
    rec = ATTACKS.create("spear", {"budget": budget, "zero_tol": zero_tol, "max_seconds": 15}).reconstruct(
        model, update, knowledge)
    pixels = ds.normalization.denormalize(rec.data.float()).clamp(0, 1)
    values = psnr(pixels[match(pixels, x)], x).clamp(max=150.0)
    return {"batch": b, "seed": seed, "defense": spec or "none", "first_layer_rms": rms, "zero_tol": zero_tol,
            "status": rec.status, "min_psnr": round(float(values.min()), 2), "exact": bool((values >= 60).all()),
            "samples_60db": int((values >= 60).sum()), "certified": sum(c.certified for c in rec.certificates),
            "proposals": rec.iterations, "seconds": round(time.perf_counter() - start, 2)}


def summary(path: str) -> None:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        cells[(r["batch"], r["defense"], r["zero_tol"])].append(r)
    print("| B | defense | zero_tol | batches exact (>= 60 dB) | worst PSNR (median over seeds) | certified |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (b, spec, tol), rows in cells.items():
        psnrs = sorted(r["min_psnr"] for r in rows)
        print(f"| {b} | {spec} | {tol or 'default'} | {sum(r['exact'] for r in rows)}/{len(rows)} | "
              f"{psnrs[len(psnrs) // 2]:.1f} | {sum(r['certified'] for r in rows)}/{b * len(rows)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--summary")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    torch.set_num_threads(1)
    specs = [f"gaussian:sigma={s:g}" if s else "" for s in SIGMAS]
    specs += [f"dpsgd:noise_multiplier={z:g},max_grad_norm={c:g}" for z, c in DP]
    for b in args.batches:
        for spec in specs:
            for tol in ZERO_TOLS:
                for seed in range(args.seeds):
                    print(json.dumps(one(b, seed, spec, tol, args.budget)), flush=True)


if __name__ == "__main__":
    main()

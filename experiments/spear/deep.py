"""spear-deep on a small ConvNet whose classifier has a fully connected ReLU layer: stage 1
(SPEAR on that layer's gradient) recovers its input features, stage 2 (Adam, feature MSE,
pixel box) fits images through the convolutions below. Built-in photos average-pooled to
16x16, random weights, FedSGD, float32 client; per batch: feature exactness (every feature
row within 1e-4 relative of the truth, after matching) and the images' PSNR after matching.

Nets: "conv": conv3x3(3->16)-ReLU-conv3x3(16->32)-ReLU-FC(8192->200)-ReLU-FC(200->8) (stride 1,
no pooling: invertible-ish); "pool": the same with a 2x2 max-pool before the FC (2048 features).

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/spear/deep.py > experiments/spear/deep.jsonl
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/spear/deep.py --nets pool --iterations 2000 >> experiments/spear/deep.jsonl
    python experiments/spear/deep.py --summary experiments/spear/deep.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.metrics.functional import psnr
from gradleak.metrics.matching import match
from gradleak.records import AttackerKnowledge


def net(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    pool = [nn.MaxPool2d(2)] if kind == "pool" else []
    features = 32 * 16 * 16 // (4 if pool else 1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         *pool, nn.Flatten(), nn.Linear(features, 200), nn.ReLU(), nn.Linear(200, 8)).eval()


def one(kind: str, b: int, seed: int, iterations: int) -> dict:
    ds = load_dataset("photos")
    gen = torch.Generator().manual_seed(10_000 * seed + b)
    x, y = ds.batch(torch.randperm(len(ds), generator=gen)[:b].tolist())
    x = F.avg_pool2d(x, 2)  # 32x32 -> 16x16, pixels stay in [0, 1]
    xn = ds.normalization.normalize(x)
    model = net(kind, seed)
    update = simulate_client(model, xn, y)
    knowledge = AttackerKnowledge(num_samples=b, input_shape=tuple(x.shape[1:]), num_classes=8,
                                  bounds=ds.normalization.bounds())
    start = time.perf_counter()
    attack = ATTACKS.create("spear-deep", {"iterations": iterations, "lr": 0.05, "budget": 200_000})
    rec = attack.reconstruct(model, update, knowledge, seed=seed)
    seconds = time.perf_counter() - start
    fc = "6" if kind == "pool" else "5"
    with torch.no_grad():
        true = model[: int(fc)](xn)
        got = model[: int(fc)](rec.data)  # the features of the stage-2 images
    sol = attack._solve(model, update, fc, b, seed, 0.0)  # stage 1's rows again, to compare with the truth
    feat_err = max(min(float((t - f.float()).norm() / t.norm()) for f in sol.xt) for t in true)
    pixels = ds.normalization.denormalize(rec.data.float()).clamp(0, 1)
    values = psnr(pixels[match(pixels, x)], x).clamp(max=150.0)
    noise = psnr(torch.rand(x.shape, generator=gen), x)
    return {"net": kind, "batch": b, "seed": seed, "status": rec.status,
            "certified": sum(c.certified for c in rec.certificates), "feature_error": feat_err,
            "features_exact": feat_err < 1e-4, "stage2_feature_loss": rec.restart_losses[0],
            "image_feature_error": max(min(float((t - g).norm() / t.norm()) for g in got) for t in true),
            "psnr_mean": round(float(values.mean()), 2), "psnr_min": round(float(values.min()), 2),
            "random_psnr": round(float(noise.mean()), 2), "iterations": iterations, "seconds": round(seconds, 2)}


def summary(path: str) -> None:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    with open(path) as lines:
        rows = [json.loads(line) for line in lines]
    for r in rows:
        cells[(r["net"], r["batch"], r["iterations"])].append(r)
    print("| net | B | stage-2 steps | batches with exact features | certified rows | stage-2 feature loss (max) | "
          "image PSNR mean (min) | random image PSNR | s per batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (kind, b, steps), rows in cells.items():
        print(f"| {kind} | {b} | {steps} | {sum(r['features_exact'] for r in rows)}/{len(rows)} | "
              f"{sum(r['certified'] for r in rows)}/{b * len(rows)} | "
              f"{max(r['stage2_feature_loss'] for r in rows):.1e} | "
              f"{sum(r['psnr_mean'] for r in rows) / len(rows):.1f} ({min(r['psnr_min'] for r in rows):.1f}) | "
              f"{sum(r['random_psnr'] for r in rows) / len(rows):.1f} | "
              f"{sum(r['seconds'] for r in rows) / len(rows):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["conv", "pool"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--summary")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    for kind in args.nets:
        for b in args.batches:
            for seed in range(args.seeds):
                print(json.dumps(one(kind, b, seed, args.iterations)), flush=True)


if __name__ == "__main__":
    main()

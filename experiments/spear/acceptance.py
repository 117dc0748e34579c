"""SPEAR's acceptance: an MLP with a 1,000-unit ReLU first layer on built-in 32x32 photos
(flattened), FedSGD, random-weight models; per batch, whether every sample is recovered at
PSNR >= 60 dB after matching, the certificates, time, proposals drawn against the expected
count (from the true ReLU pattern), and `analytic-fc` on the same batch beside it.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/spear/acceptance.py \
        --batches 1 2 4 8 16 --seeds 10 --baseline-seeds 3 >> experiments/spear/acceptance.jsonl
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/spear/acceptance.py \
        --batches 20 --seeds 3 >> experiments/spear/acceptance.jsonl
    python experiments/spear/acceptance.py --summary experiments/spear/acceptance.jsonl

One process, one thread (the lead's machine shares 2 cores among five sessions).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.spear import expected_proposals
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.metrics.functional import psnr
from gradleak.metrics.matching import match
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge

WIDTH = 1000
EXACT_DB = 60.0


def true_zero_counts(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[int], int]:
    """Units each sample leaves off among the units some sample uses (SPEAR's sampling pool)."""
    layer = model[1]
    xx = x.reshape(x.shape[0], -1).detach().requires_grad_(False)
    z = layer(xx).detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model[3](model[2](z)), y)
    (d,) = torch.autograd.grad(loss, z)
    used = (d != 0).any(dim=0)
    return [int(((d[i] == 0) & used).sum()) for i in range(d.shape[0])], int(used.sum())


def run_attack(name: str, model, update, knowledge, ds, x_pixels, labels, options=None) -> dict:
    start = time.perf_counter()
    rec = ATTACKS.create(name, options or {}).reconstruct(model, update, knowledge, seed=0)
    seconds = time.perf_counter() - start
    pixels = ds.normalization.denormalize(rec.data.float()).clamp(0, 1)
    order = match(pixels, x_pixels)
    values = psnr(pixels[order], x_pixels).clamp(max=150.0)
    out = {"attack": name, "seconds": round(seconds, 3), "status": rec.status,
           "min_psnr": round(float(values.min()), 2), "recovered": int((values >= EXACT_DB).sum()),
           "exact": bool((values >= EXACT_DB).all()), "proposals": rec.iterations}
    if rec.certificates:
        out["certified"] = sum(c.certified for c in rec.certificates)
        out["certified_and_exact"] = sum(c.certified and bool(v >= EXACT_DB)
                                         for c, v in zip([rec.certificates[i] for i in order.tolist()], values))
        out["worst_residual"] = max(c.residual for c in rec.certificates)
    if rec.labels is not None:
        out["labels_right"] = sorted(rec.labels.tolist()) == sorted(labels.tolist())  # as a multiset
        out["labels_per_sample"] = rec.labels[order].tolist() == labels.tolist()  # and with their samples
    return out


def one(dataset: str, b: int, seed: int, budget: int, baseline: bool) -> list[dict]:
    ds = load_dataset(dataset)
    shape = ds.image_shape
    model = build_model("mlp", num_classes=ds.num_classes, input_shape=shape, seed=seed, hidden=(WIDTH,))
    gen = torch.Generator().manual_seed(10_000 * seed + b)
    idx = torch.randperm(len(ds), generator=gen)[:b].tolist()
    x, y = ds.batch(idx)
    xn = ds.normalization.normalize(x)
    update = simulate_client(model, xn, y)
    knowledge = AttackerKnowledge(num_samples=b, input_shape=shape, num_classes=ds.num_classes)
    zeros, active = true_zero_counts(model, xn, y)
    base = {"dataset": dataset, "width": WIDTH, "batch": b, "seed": seed, "active_units": active,
            "min_zero_units": min(zeros), "expected_proposals": round(expected_proposals(zeros, active, b))}
    rows = [base | run_attack("spear", model, update, knowledge, ds, x, y, {"budget": budget})]
    if baseline:
        rows.append(base | run_attack("analytic-fc", model, update, knowledge, ds, x, y))
    return rows


def summary(path: str) -> None:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for line in open(path):
        row = json.loads(line)
        cells[(row["dataset"], row["batch"], row["attack"])].append(row)
    print("| data | B | attack | batches exact (all samples >= 60 dB) | samples >= 60 dB | certified | "
          "s per batch (median) | proposals (median) | expected (median) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (data, b, attack), rows in sorted(cells.items()):
        med = lambda k: sorted(r[k] for r in rows)[len(rows) // 2]  # noqa: E731
        cert = f"{sum(r.get('certified', 0) for r in rows)}/{b * len(rows)}" if attack == "spear" else "-"
        print(f"| {data} | {b} | {attack} | {sum(r['exact'] for r in rows)}/{len(rows)} | "
              f"{sum(r['recovered'] for r in rows)}/{b * len(rows)} | {cert} | {med('seconds'):.2f} | "
              f"{med('proposals') if attack == 'spear' else '-'} | {med('expected_proposals') if attack == 'spear' else '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--dataset", default="photos")
    parser.add_argument("--budget", type=int, default=20_000_000)
    parser.add_argument("--baseline-seeds", type=int, default=3,
                        help="run analytic-fc beside on the first this many seeds (its grouping takes ~30 s a batch)")
    parser.add_argument("--summary", help="print the markdown table of a results file and exit")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    torch.set_num_threads(1)
    for b in args.batches:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for row in one(args.dataset, b, seed, args.budget, seed < args.first_seed + args.baseline_seeds):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""Default prior weights of the Bayes family (bayes, l2, l1, cosine) and their check
against the mean-colour floor: one procedure for every attack (issue 20, part 4).

Procedure: LeNet (seed 0), built-in photos, batch 1, labels given, no defense (the
attacks' documented default case). For each attack, every TV weight of a factor-10 grid
runs on the held-out photos `--tune` (never the evaluation photos 0-9) with `--steps`
L-BFGS steps; where the best mean PSNR sits at an end of the grid, the grid grows by a
factor 10 past that end (at most two times); the weight with the best mean PSNR becomes
the attack's `default_tv`. Rows already in `--out` are read back, not rerun.
Then `--check` runs every attack with its class defaults (200 L-BFGS steps, default
TV) on the held-out photos and records the mean-colour floor beside it. One JSON row per
run; rows carry "phase": "tune" or "check".

    python experiments/honest/bayes_floor.py --out experiments/honest/bayes_tune.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.metrics import evaluate_images
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge

# centred on each attack's weight before this procedure; factor-10 steps
GRIDS = {"l2": (1e-3, 1e-2, 1e-1), "bayes": (5e-4, 5e-3, 5e-2), "l1": (1e-2, 1e-1, 1.0),
         "cosine": (1e-5, 1e-4, 1e-3)}


def attack_photo(data, model, name: str, index: int, options: dict) -> dict:
    images, labels = data.batch([index])
    update = simulate_client(model, data.normalization.normalize(images), labels)
    knowledge = AttackerKnowledge(num_samples=1, input_shape=data.image_shape, num_classes=data.num_classes,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=labels,
                                  bounds=data.normalization.bounds())
    start = time.perf_counter()
    rec = ATTACKS.get(name)(**options).reconstruct(model, update, knowledge, seed=index)
    metrics = evaluate_images(data.normalization.denormalize(rec.data).clamp(0, 1), images)
    return {"attack": name, "image": index, "options": options, "psnr": metrics.psnr_mean,
            "floor_psnr": sum(metrics.baseline_psnr) / len(metrics.baseline_psnr),
            "seconds": round(time.perf_counter() - start, 2), "status": rec.status}


def tune(name, grid, args, done, data, model, emit) -> float:
    """The grid's best weight by mean PSNR over the tuning photos, growing it past an end."""
    scores: dict[float, float] = {}
    for _ in range(3):
        for tv in grid:
            if tv in scores:
                continue
            for index in args.tune:
                if (name, tv, index) not in done:
                    row = attack_photo(data, model, name, index, {"tv": tv, "iterations": args.steps})
                    emit({"phase": "tune"} | row)
                    done[(name, tv, index)] = row["psnr"]
            scores[tv] = sum(done[(name, tv, i)] for i in args.tune) / len(args.tune)
        best = max(scores, key=scores.get)
        if best == grid[-1]:
            grid.append(float(f"{best * 10:.0e}"))
        elif best == grid[0]:
            grid.insert(0, float(f"{best / 10:.0e}"))
        else:
            break
    return max(scores, key=scores.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tune", type=int, nargs="*", default=[30, 31])
    parser.add_argument("--check", type=int, nargs="*", default=[30, 31, 32])
    parser.add_argument("--steps", type=int, default=50, help="L-BFGS steps while tuning")
    parser.add_argument("--attack", action="append", choices=sorted(GRIDS), help="default: all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data = load_dataset("photos")
    model = build_model("lenet", num_classes=data.num_classes, input_shape=data.image_shape, seed=0)
    done: dict[tuple[str, float, int], float] = {}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            for line in fh:
                row = json.loads(line)
                if row["phase"] == "tune" and row["options"].get("iterations") == args.steps:
                    done[(row["attack"], row["options"]["tv"], row["image"])] = row["psnr"]
    with open(args.out, "a") as fh:
        def emit(row):
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(row["phase"], row["attack"], row["options"], row["image"], round(row["psnr"], 2),
                  round(row["floor_psnr"], 2), row["seconds"], flush=True)

        for name in args.attack or list(GRIDS):
            if args.tune:
                print(name, "default_tv:", tune(name, list(GRIDS[name]), args, done, data, model, emit), flush=True)
        for name in args.attack or list(GRIDS):
            for index in args.check:
                emit({"phase": "check"} | attack_photo(data, model, name, index, {}))


if __name__ == "__main__":
    main()

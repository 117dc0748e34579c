"""gias, ggl and inverting gradients side by side, in and out of the generator's distribution,
and ggl with a non-differentiable defense in its loop against ig and bayes.

Run from the repository root (commands and results in experiments/latent/README.md):
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src nice -n 10 python experiments/latent/attacks.py \
        --setting in --batch 1 4 --trials 2 --seconds 20
Each (setting, batch, trial) draws a client pool of 64 held-out images and a batch from it,
a seeded ReLU ConvNet, one FedSGD update; every attack gets the same update, the same
wall-clock budget and the labels (given). Rows go to --out (jsonl), one per attack.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.defenses import parse_defense
from gradleak.generators import checkpoint_data
from gradleak.metrics.evaluate import evaluate_images
from gradleak.metrics.identify import identify
from gradleak.models import build_model
from gradleak.pipelines.figures import save_image
from gradleak.pipelines.generator import class_subset
from gradleak.records import AttackerKnowledge, LabelKnowledge

HERE = Path(__file__).resolve().parent
GEN = Path(os.environ.get("LATENT_GENERATORS", HERE / "generators"))
# setting -> (generator checkpoint, client data set, client classes)
SETTINGS = {
    "in": (GEN / "digits-all" / "generator.pt", "digits", None),
    "ood-digits": (GEN / "digits-0-4" / "generator.pt", "digits", (5, 6, 7, 8, 9)),
    "ood-faces": (GEN / "digits-all" / "generator.pt", "faces", None),
    "in-0-4": (GEN / "digits-0-4" / "generator.pt", "digits", (0, 1, 2, 3, 4)),  # the OOD generator's own classes
}
DEFENSES = ("qsgd:bits=2", "topk:keep=0.1")
POOL = 64


def attack_options(name: str, generator: str, seconds: float) -> dict:
    if name == "gias":
        return {"generator": generator, "latent_iterations": 200, "generator_iterations": 100000, "restarts": 2,
                "max_seconds": seconds}
    if name == "ggl":
        return {"generator": generator, "budget": 100000, "max_seconds": seconds}
    if name == "ig":
        return {"iterations": 2000, "restarts": 1, "max_seconds": seconds}
    if name == "bayes":
        return {"iterations": 2000, "max_seconds": seconds}
    raise ValueError(name)


def trial(setting: str, batch: int, seed: int, attacks: list[str], seconds: float, defense: str | None,
          figure: Path | None) -> list[dict]:
    ckpt, dataset, classes = SETTINGS[setting]
    train_info = checkpoint_data(ckpt)
    train = load_dataset(train_info["dataset"], split="train", image_size=train_info["image_size"])
    train_images, _ = class_subset(train, tuple(train_info["classes"]))
    test = load_dataset(dataset, split="test", image_size=32)
    images, labels = class_subset(test, classes)
    gen = torch.Generator().manual_seed(seed)
    pool_idx = torch.randperm(images.shape[0], generator=gen)[:POOL]
    pool, pool_labels = images[pool_idx], labels[pool_idx]
    positions = list(range(batch))  # the batch is the pool's first images
    x, y = pool[:batch], pool_labels[:batch]
    norm = test.normalization
    model = build_model("convnet", num_classes=test.num_classes, input_shape=(1, 32, 32), seed=seed,
                        width=8, norm="none")
    update = simulate_client(model, norm.normalize(x), y)
    knowledge = AttackerKnowledge(num_samples=batch, input_shape=(1, 32, 32), num_classes=test.num_classes,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=y.clone(), bounds=norm.bounds())
    if defense is not None:
        update = parse_defense(defense).transform(update, seed=seed + 1000)
    rows, shown = [], [x]
    for name in attacks:
        known = knowledge if defense is None or name == "ig" else dataclasses.replace(
            knowledge, defense=parse_defense(defense))
        attack = ATTACKS.create(name, attack_options(name, str(ckpt), seconds))
        start = time.perf_counter()
        rec = attack.reconstruct(model, update, known, seed=seed)
        pixels = norm.denormalize(rec.data).clamp(0, 1)
        m = evaluate_images(pixels, x, metrics=("psnr",))
        matched = pixels[list(m.assignment)]
        client = identify(matched, pool, true_index=positions)
        nearest = identify(matched, train_images)
        true_psnr = m.values["psnr"]
        rows.append({
            "setting": setting, "defense": defense, "batch": batch, "trial": seed, "attack": name,
            "psnr": sum(true_psnr) / batch, "identified": client.rate,
            "nearest_training_psnr": sum(nearest.nearest_score) / batch,
            "closer_to_training": sum(t < n for t, n in zip(true_psnr, nearest.nearest_score)) / batch,
            "seconds": time.perf_counter() - start, "status": rec.status, "iterations": rec.iterations,
            "loss": min(rec.restart_losses) if rec.restart_losses else math.nan,
        })
        shown += [matched, train_images[list(nearest.nearest)]]
        print(json.dumps(rows[-1]), flush=True)
    if figure is not None:  # rows: original, then per attack its reconstruction and that's nearest training image
        save_image(figure, torch.cat([torch.cat(list(t), dim=2) for t in shown], dim=1), scale=3)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--attacks", nargs="+", default=["gias", "ggl", "ig"])
    p.add_argument("--defense", help="defense applied by the client (ggl and bayes know it; ig does not)")
    p.add_argument("--out", default=str(HERE / "results.jsonl"))
    args = p.parse_args()
    torch.set_num_threads(1)
    with open(args.out, "a") as f:
        for batch in args.batch:
            for t in range(args.trials):
                tag = f"{args.setting}-{args.defense or 'none'}-b{batch}-t{t}".replace(":", "_").replace("=", "")
                for row in trial(args.setting, batch, t, args.attacks, args.seconds, args.defense,
                                 HERE / "figures" / f"{tag}.png" if t == 0 else None):
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""Inverting gradients with and without the BatchNorm-statistics prior (Yin et al., CVPR 2021),
for each source of the prior's target, and Yin's batch label rule against our `count` rule.

Issue 20's acceptance setting: Geiping's ConvNet with BatchNorm in train mode (width 32), batch
4 of built-in photos, FedSGD, labels given to the attack (the label rules are compared apart,
on the same updates), 2,000 iterations over 8 batches. Sources: "client" (the client's batch
statistics, level 4), "running" (the model's running statistics, level 0; a fresh model's are
mean 0 / variance 1), "proxy" (statistics of the 64 built-in photos 61-124, level 2). One JSON row
per (batch, variant). Run (scaled down on 2 shared CPU cores; see README.md here):

    python experiments/honest/bn_prior.py --out experiments/honest/bn_prior.jsonl \
        --iterations 2000 --batches 8
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.labels import recover_labels
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.metrics import evaluate_images
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge

VARIANTS = ("none", "client", "running", "proxy")


def label_hits(rule: str, model, update, labels, shape) -> float:
    got = recover_labels(model, update.tensors, len(labels), shape, rule=rule).tolist()
    truth = sorted(labels.tolist())
    return sum(min(got.count(c), truth.count(c)) for c in set(truth)) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32, help="photos resized to this square size")
    parser.add_argument("--first", type=int, default=0, help="index of the first client batch")
    parser.add_argument("--bn", type=float, default=1e-2, help="weight of the BN prior")
    parser.add_argument("--tv", type=float, default=1e-2)
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    parser.add_argument("--proxy", type=int, nargs=2, default=[61, 125], help="index range of the proxy photos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("photos").resized(args.image_size)
    model = build_model("convnet", num_classes=data.num_classes, input_shape=data.image_shape, seed=0,
                        width=args.width).train()
    proxy_images, _ = data.batch(list(range(*args.proxy)))
    proxy = data.normalization.normalize(proxy_images)
    with open(args.out, "a") as fh:
        for b in range(args.first, args.first + args.batches):
            indices = list(range(b * args.batch_size, (b + 1) * args.batch_size))
            assert not set(indices) & set(range(*args.proxy)), "proxy photos overlap the client's"
            images, labels = data.batch(indices)
            update = simulate_client(model, data.normalization.normalize(images), labels, model_mode="train")
            labels_row = {rule: label_hits(rule, model, update, labels, data.image_shape) for rule in ("count", "yin")}
            knowledge = AttackerKnowledge(num_samples=len(indices), input_shape=data.image_shape,
                                          num_classes=data.num_classes, label_knowledge=LabelKnowledge.GIVEN,
                                          labels=labels, bounds=data.normalization.bounds())
            for variant in args.variant or VARIANTS:
                options = {"iterations": args.iterations, "tv": args.tv}
                if variant != "none":
                    options |= {"bn": args.bn, "bn_source": variant}
                    if variant == "proxy":
                        options["bn_proxy"] = proxy
                start = time.perf_counter()
                rec = ATTACKS.create("ig", options).reconstruct(model, update, knowledge, seed=b)
                pixels = data.normalization.denormalize(rec.data).clamp(0, 1)
                metrics = evaluate_images(pixels, images)
                row = {"batch": b, "images": indices, "variant": variant, "bn": args.bn if variant != "none" else 0,
                       "tv": args.tv, "iterations": args.iterations, "width": args.width,
                       "image_size": args.image_size, "final_loss": min(rec.restart_losses),
                       "psnr": metrics.psnr_mean, "psnr_each": list(metrics.values["psnr"]),
                       "floor_psnr": sum(metrics.baseline_psnr) / len(metrics.baseline_psnr),
                       "assumptions": [int(a) for a in rec.assumptions], "label_accuracy": labels_row,
                       "seconds": round(time.perf_counter() - start, 1)}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(b, variant, round(row["psnr"], 2), row["seconds"], flush=True)


if __name__ == "__main__":
    main()

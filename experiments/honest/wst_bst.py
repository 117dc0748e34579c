"""WST against BST on SoK Table 2's setting, after the scale fix (issue 20), as a plain script.

LeNet on built-in photos, k local mini-batches of one image in one epoch at lr 0.003, DLG with
the labels given: WST (knows the local configuration, differentiates through the k steps,
now comparing deltas in gradient units) against BST (reads the delta as one step at lr 0.003).
The sweep `table2_rerun.yaml` is the same with more cells; this script exists because the issue-20
session's 2 shared CPU cores (load above 20) could not finish that sweep. One JSON row per run:

    python experiments/honest/wst_bst.py --out experiments/honest/wst_bst.jsonl --ks 1 2 --iterations 30
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.metrics import evaluate_images
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge, LocalTraining, Protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.003)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("photos")
    model = build_model("lenet", num_classes=data.num_classes, input_shape=data.image_shape, seed=0)
    with open(args.out, "a") as fh:
        for seed in args.seeds:
            for k in args.ks:
                indices = list(range(seed * 8, seed * 8 + k))
                images, labels = data.batch(indices)
                training = LocalTraining(Protocol.FEDAVG, lr=args.lr, epochs=1, batch_size=1)
                update = simulate_client(model, data.normalization.normalize(images), labels, training, seed=seed)
                for knows in (True, False):
                    knowledge = AttackerKnowledge(
                        num_samples=k, input_shape=data.image_shape, num_classes=data.num_classes,
                        label_knowledge=LabelKnowledge.GIVEN, labels=labels, bounds=data.normalization.bounds(),
                        knows_training=knows, training=training if knows else None)
                    start = time.perf_counter()
                    rec = ATTACKS.create("dlg", {"iterations": args.iterations, "assumed_lr": args.lr}).reconstruct(
                        model, update, knowledge, seed=seed)
                    metrics = evaluate_images(data.normalization.denormalize(rec.data).clamp(0, 1), images)
                    row = {"k": k, "seed": seed, "attacker": "WST" if knows else "BST", "iterations": args.iterations,
                           "psnr": metrics.psnr_mean, "psnr_each": list(metrics.values["psnr"]),
                           "restart_losses": list(rec.restart_losses), "status": rec.status,
                           "seconds": round(time.perf_counter() - start, 1)}
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    print(k, seed, row["attacker"], round(row["psnr"], 2), row["seconds"], flush=True)


if __name__ == "__main__":
    main()

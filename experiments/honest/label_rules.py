"""Yin et al.'s batch label rule against our `count` rule (and iDLG's row sums), no optimization.

Geiping's ConvNet with BatchNorm in train mode (width 32, untrained), FedSGD, random batches of
built-in photos and digits drawn with a seeded generator (labels may repeat: Yin's rule assumes
they do not). Label accuracy is the multiset overlap. One JSON row per (dataset, batch size):

    python experiments/honest/label_rules.py --out experiments/honest/label_rules.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch

from gradleak.attacks.engine.labels import recover_labels
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.models import build_model

RULES = ("count", "yin", "idlg")


def overlap(got: list[int], truth: list[int]) -> float:
    return sum(min(got.count(c), truth.count(c)) for c in set(truth)) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open(args.out, "a") as fh:
        for name in ("photos", "digits"):
            data = load_dataset(name)
            model = build_model("convnet", num_classes=data.num_classes, input_shape=data.image_shape, seed=0,
                                width=32).train()
            for size in args.sizes:
                gen = torch.Generator().manual_seed(size)
                scores = {rule: [] for rule in RULES}
                repeats = 0
                for _ in range(args.draws):
                    indices = torch.randperm(len(data), generator=gen)[:size].tolist()
                    images, labels = data.batch(indices)
                    truth = labels.tolist()
                    repeats += len(set(truth)) < size
                    update = simulate_client(model, data.normalization.normalize(images), labels, model_mode="train")
                    for rule in RULES:
                        got = recover_labels(model, update.tensors, size, data.image_shape, rule=rule).tolist()
                        scores[rule].append(overlap(got, truth))
                row = {"dataset": name, "batch": size, "draws": args.draws, "with_repeats": repeats,
                       **{rule: sum(v) / len(v) for rule, v in scores.items()},
                       **{f"{rule}_exact": sum(s == 1.0 for s in v) / len(v) for rule, v in scores.items()}}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

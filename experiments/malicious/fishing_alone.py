"""The fourth column of fishing.py: the same attack on the target alone, on the fished model.

Run (from the repository root, about 3 minutes on one core):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/malicious/fishing_alone.py [ITERATIONS] [TARGETS]
Writes experiments/malicious/fishing_alone.jsonl. Same targets, model, attack and seed as
fishing.py; here the client's batch is the target alone and it trains the fished model.
Below the last layer that update is the batch-64 update times 64 (tests/test_server_fishing.py),
so the fishing read-out should score the same, up to float rounding.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fishing import attack

from gradleak.data.registry import load_dataset
from gradleak.metrics import score_reconstruction
from gradleak.models import build_model
from gradleak.server import parse_server

OUT = Path(__file__).resolve().parent


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    targets = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    data = load_dataset("photos", None, split="train")
    norm = data.normalization
    model = build_model("lenet", num_classes=data.num_classes, input_shape=data.image_shape, seed=0)
    rows = []
    for target in range(targets):
        images, labels = data.batch([target])
        server = parse_server(f"fishing:target={int(labels[0])}").build(model, data.image_shape, seed=0)
        rec, seconds = attack(server.model, images, labels, norm, iterations, given=False, name="fishing",
                              server=server.spec)
        psnr = score_reconstruction(rec.data[:1], images, normalization=norm).metrics.psnr[0]
        rows.append({"target": target, "iterations": iterations, "psnr_fished_alone": psnr, "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    with open(OUT / "fishing_alone.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()

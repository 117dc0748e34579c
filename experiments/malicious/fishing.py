"""Class fishing (Wen et al. 2022) on the built-in photos at 32x32, LeNet (sigmoid), FedSGD.

Run (from the repository root, about 12 minutes on one core):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/malicious/fishing.py [ITERATIONS] [TARGETS]
Writes experiments/malicious/fishing.jsonl and fishing.md.

For each target image (a different class each time) the client's batch is the target and
63 images of other classes (batch 64, a unique target class). Three attacks, all inverting
gradients with the same iterations, TV and seed, PSNR of the target image:
  fished:  the fishing server's model, the `fishing` read-out on the batch-64 update;
  alone:   the honest model, `ig` on the target alone (batch 1, label given);
  honest:  the honest model, `ig` on the batch-64 update (all 64 labels given), the
           reconstruction matched to the target by the Hungarian assignment over the batch.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data.registry import load_dataset
from gradleak.metrics import score_reconstruction
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge
from gradleak.server import parse_server

OUT = Path(__file__).resolve().parent


def psnr_of(rec, images, norm, index: int = 0) -> float:
    return score_reconstruction(rec, images, normalization=norm).metrics.psnr[index]


def attack(model, images, labels, norm, iterations, given=True, name="ig", server=None):
    update = simulate_client(model, norm.normalize(images), labels)
    knowledge = AttackerKnowledge(num_samples=len(images), input_shape=tuple(images.shape[1:]), num_classes=8,
                                  label_knowledge=LabelKnowledge.GIVEN if given else LabelKnowledge.UNKNOWN,
                                  labels=labels if given else None, bounds=norm.bounds(), server=server)
    t0 = time.perf_counter()
    rec = ATTACKS.create(name, {"iterations": iterations}).reconstruct(model, update, knowledge, seed=0)
    return rec, time.perf_counter() - t0


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    targets = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    data = load_dataset("photos", None, split="train")
    norm = data.normalization
    model = build_model("lenet", num_classes=data.num_classes, input_shape=data.image_shape, seed=0)
    rows = []
    for t in range(targets):
        target = t  # item t is photo t's thumbnail, class t
        label = int(data.labels[target])
        others = [i for i in torch.randperm(len(data), generator=torch.Generator().manual_seed(t)).tolist()
                  if int(data.labels[i]) != label][:63]
        images, labels = data.batch([target, *others])
        server = parse_server(f"fishing:target={label}").build(model, data.image_shape, seed=0)
        fished, s_f = attack(server.model, images, labels, norm, iterations, given=False, name="fishing",
                             server=server.spec)
        # the read-out's first row is the target: its PSNR against the target image
        p_fished = score_reconstruction(fished.data[:1], images[:1], normalization=norm).metrics.psnr[0]
        alone, s_a = attack(model, images[:1], labels[:1], norm, iterations)
        p_alone = psnr_of(alone, images[:1], norm)
        honest, s_h = attack(model, images, labels, norm, iterations)
        p_honest = psnr_of(honest, images, norm, 0)
        row = {"target": target, "class": data.classes[label], "iterations": iterations, "psnr_fished": p_fished,
               "psnr_alone": p_alone, "psnr_honest_batch": p_honest, "seconds": [s_f, s_a, s_h],
               "fished_assumptions": [int(a) for a in fished.assumptions]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    md = ["# Class fishing on photos 32x32, LeNet, batch 64 with a unique target class", "",
          f"inverting gradients, {iterations} iterations, TV 1e-2, one restart, seed 0 (scaled down from the "
          "library default of 2000)", "",
          "| target | class | PSNR fished (batch 64) | PSNR alone (batch 1) | PSNR honest batch 64 | fished - alone "
          "| fished - honest |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['target']} | {r['class']} | {r['psnr_fished']:.2f} | {r['psnr_alone']:.2f} | "
                  f"{r['psnr_honest_batch']:.2f} | {r['psnr_fished'] - r['psnr_alone']:+.2f} | "
                  f"{r['psnr_fished'] - r['psnr_honest_batch']:+.2f} |")
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("psnr_fished", "psnr_alone", "psnr_honest_batch")}
    md.append(f"| mean | | {mean['psnr_fished']:.2f} | {mean['psnr_alone']:.2f} | {mean['psnr_honest_batch']:.2f} | "
              f"{mean['psnr_fished'] - mean['psnr_alone']:+.2f} | {mean['psnr_fished'] - mean['psnr_honest_batch']:+.2f} |")
    with open(OUT / "fishing.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (OUT / "fishing.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""Why FedAvg blurs the imprint read-out: float32 rounding of the weight delta, or the local steps?

Run (from the repository root, about a minute on one core):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/malicious/imprint_fedavg_precision.py
Writes experiments/malicious/imprint_fedavg_precision.jsonl and .md.

The FedAvg setting of imprint.py (photos, LeNet, 128 bins from the photos test split, batch
64, 4 local steps of 16, lr 0.1), the whole client in float32 (as deployed) or in float64
(model, images and the delta), 10 seeds. Same bins, same samples, same steps: a difference
is the rounding of w_after - w_before.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data.registry import load_dataset
from gradleak.metrics import score_reconstruction
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge, LocalTraining
from gradleak.server import parse_server

OUT = Path(__file__).resolve().parent


def run(seed: int, dtype: torch.dtype, back: str) -> dict:
    data = load_dataset("photos", None, split="train")
    norm = data.normalization
    pub = norm.normalize(load_dataset("photos", None, split="test").images)
    model = build_model("lenet", num_classes=data.num_classes, input_shape=data.image_shape, seed=seed).to(dtype)
    server = parse_server(f"imprint:bins=128,back={back}").build(model, data.image_shape, seed=seed, public=pub)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:64].tolist()
    images, labels = data.batch(idx)
    update = simulate_client(server.model, norm.normalize(images).to(dtype), labels,
                             LocalTraining(protocol="fedavg", lr=0.1, batch_size=16), seed=seed)
    knowledge = AttackerKnowledge(num_samples=64, input_shape=data.image_shape, num_classes=data.num_classes,
                                  server=server.spec, label_knowledge=LabelKnowledge.GIVEN, labels=labels)
    rec = ATTACKS.create("imprint", {}).reconstruct(server.model, update, knowledge, seed=seed)
    psnr = torch.tensor(score_reconstruction(rec.data.float(), images, normalization=norm).metrics.psnr)
    return {"seed": seed, "dtype": str(dtype).replace("torch.", ""), "back": back,
            "recovered_40": float((psnr >= 40).float().mean()), "recovered_18": float((psnr >= 18).float().mean())}


def main() -> None:
    torch.set_num_threads(1)
    rows, md = [], ["# Imprint under FedAvg (4 local steps of 16): float32 vs float64 client", "",
                    "| back | client dtype | seeds | recovered >= 40 dB | recovered >= 18 dB |", "|---|---|---|---|---|"]
    for back in ("shared", "per-bin", "fixed"):
        for dtype in (torch.float32, torch.float64):
            part = [run(s, dtype, back) for s in range(10)]
            rows += part
            md.append(f"| {back} | {part[0]['dtype']} | {len(part)} | "
                      f"{statistics.mean(r['recovered_40'] for r in part):.3f} | "
                      f"{statistics.mean(r['recovered_18'] for r in part):.3f} |")
            print(md[-1], flush=True)
    with open(OUT / "imprint_fedavg_precision.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (OUT / "imprint_fedavg_precision.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()

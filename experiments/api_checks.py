"""What the API does on users' own models: attention models, the pixel box, and verdicts.

    python experiments/api_checks.py            # about 6 minutes on 2 CPU cores; rows in api_checks.jsonl

Rows:
- attention: the registered `vit` and a stock `nn.TransformerEncoderLayer` model, one
  built-in photo at 16x16, FedSGD, labels given, inverting gradients (2,000 steps): PSNR,
  gradient mismatch, verdict, time;
- bounds: a ConvNet with BatchNorm (width 16) and a LayerNorm ViT, photos 0-3, inverting
  gradients 1,000 steps, with the pixel box from the data's normalization against no box
  (`bounds="none"`, what the API did before);
- verdicts: the default demo (iDLG on DLG's LeNet), a failing attack (inverting gradients
  on LeNet-ReLU, 200 steps) and R-GAP on CNN6-d.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import gradleak
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.models import build_model
from gradleak.pipelines import AuditConfig, run_audit

OUT = Path(__file__).with_name("api_checks.jsonl")


class _Tokens(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class _Mean(nn.Module):
    def forward(self, x):
        return x.mean(1)


def encoder_layer_model(classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 4, 4), _Tokens(),
                         nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), _Mean(),
                         nn.Linear(32, classes))


def attack(model, x, y, norm, **options) -> dict:
    model = model.eval()
    update = simulate_client(model, norm.normalize(x), y)
    t0 = time.perf_counter()
    rec = gradleak.reconstruct(model, update, input_shape=tuple(x.shape[1:]), num_samples=len(x), labels=y,
                               normalization=(norm.mean, norm.std), **options)
    seconds = time.perf_counter() - t0
    metrics = gradleak.evaluate(rec, norm.normalize(x), normalization=norm, true_labels=y)
    return {"psnr": metrics.psnr_mean, "ssim": metrics.ssim_mean, "verdict": metrics.verdict.overall.value,
            "baseline_psnr": sum(metrics.baseline_psnr) / len(metrics.baseline_psnr),
            "gradient_mismatch": rec.gradient_mismatch, "notes": list(rec.notes), "seconds": round(seconds, 1)}


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    photos = load_dataset("photos").resized(16)
    norm = photos.normalization
    x, y = photos.batch([0])
    for name, model in (("vit", build_model("vit", num_classes=8, input_shape=(3, 16, 16), seed=0)),
                        ("transformer-encoder-layer", encoder_layer_model(8))):
        row = {"check": "attention", "model": name, **attack(model, x, y, norm, attack="ig", iterations=2000)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    data32 = load_dataset("photos")
    for name, options in (("convnet", {"width": 16, "norm": "batch"}), ("vit", {})):
        model = build_model(name, num_classes=8, input_shape=(3, 32, 32), seed=0, **options)
        for box in ("normalization", "none"):
            for index in range(4):
                xi, yi = data32.batch([index])
                extra = {"bounds": "none"} if box == "none" else {}
                row = {"check": "bounds", "model": name, "box": box, "index": index,
                       **attack(model, xi, yi, data32.normalization, attack="ig", iterations=1000, **extra)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    for label, config in (
            ("default demo", AuditConfig()),
            ("IG on LeNet-ReLU, 200 steps", AuditConfig(attack="ig", attack_options={"iterations": 200},
                                                        model_options={"activation": "relu", "init": "default"}))):
        run = run_audit(config)
        row = {"check": "verdict", "case": label, "psnr": run.result.metrics.psnr_mean,
               "verdict": run.result.verdict.overall.value, "gain_db": run.result.verdict.gain_db[0],
               "gradient_mismatch": run.result.gradient_mismatch}
        rows.append(row)
        print(json.dumps(row), flush=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()

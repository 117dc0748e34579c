"""R-GAP's acceptance numbers: random-weight FCN3 and CNN6, one image, misclassified label
(the paper's demo), through the `rgap` attack; float64 relative error and float32 PSNR.

    python experiments/rgap_acceptance.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LocalTraining

CASES = {"fcn3": (1, 28, 28), "cnn6": (3, 32, 32), "cnn6-d": (3, 32, 32)}


def one(name: str, seed: int, dtype: torch.dtype) -> dict:
    shape = CASES[name]
    model = build_model(name, num_classes=1, input_shape=shape, seed=seed).to(dtype)
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1000 + seed), dtype=dtype)
    with torch.no_grad():
        label = (model(x)[:, 0] <= 0).long()  # misclassified on purpose
    update = simulate_client(model, x, label, LocalTraining(loss="logistic"))
    start = time.perf_counter()
    rec = ATTACKS.get("rgap")().reconstruct(model, update, AttackerKnowledge(num_samples=1, input_shape=shape,
                                                                               num_classes=2))
    seconds = time.perf_counter() - start
    mse = float(((rec.data.clamp(0, 1) - x) ** 2).mean())
    return {"model": name, "seed": seed, "dtype": str(dtype).split(".")[-1], "seconds": round(seconds, 2),
            "relative_error": float((rec.data - x).norm() / x.norm()),
            "psnr": min(100.0, -10 * torch.log10(torch.tensor(max(mse, 1e-20))).item()),
            "label_right": rec.labels.tolist() == label.tolist(), "peak_mib": round(rec.peak_memory_bytes / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in CASES:
        for dtype in (torch.float64, torch.float32):
            for seed in range(args.seeds):
                print(json.dumps(one(name, seed, dtype)), flush=True)


if __name__ == "__main__":
    main()

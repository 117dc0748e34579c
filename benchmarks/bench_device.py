"""Attack speed on every device this machine has, against its own matmul peak and the CPU.

    python benchmarks/bench_device.py                  # every device; rows in benchmarks/results_device.jsonl
    python benchmarks/bench_device.py --devices cpu    # one device
    python benchmarks/bench_device.py --quick          # fewer steps (a CPU check of the script itself)

Per case and device: milliseconds per attack step, as the slope between two runs of n1 and
n2 steps (so set-up and label recovery cancel), the FLOPs of one step counted by
`torch.utils.flop_counter` (matrix products and convolutions, forward and both backwards),
the TFLOP/s they achieve and that as a fraction of the device's measured float32 matmul
peak. Cases: DLG on LeNet (32 px, batch 1); inverting gradients on ResNet-18 at 32 px
(batch 1 and 8; 1 and 8 stacked restarts) and at 224 px (batch 1); R-GAP on CNN6 (one image,
closed form: whole-attack time); a 4-cell sweep on 2 workers (whole-sweep time). On a GPU
every attack case also runs with `sync_every=1` (a loss read-back every step) and TF32
matmuls, to show what each option is worth. The CPU runs on one thread: the reference the
targets compare against (a GPU at least 10x one CPU thread at 32 px).

Targets (issue 17): ResNet-18 at 224 px in at most 15 s per 1,000 inverting-gradients steps
(half of breaching's published 33 s on a GTX 2080-class GPU); 8 stacked restarts at most 2x
the time of one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import gradleak
from gradleak.devices import Speed, available_devices, resolve_device
from gradleak.models import build_model

OUT = Path(__file__).with_name("results_device.jsonl")

# name, model, options, input side, batch, attack, attack options, (n1, n2) steps on a GPU
CASES = [
    ("dlg-lenet-32-b1", "lenet", {}, 32, 1, "dlg", {"restarts": 1, "halving": None, "tol": 0.0, "patience": 0},
     (20, 60)),
    ("ig-resnet18-32-b1", "resnet18", {}, 32, 1, "ig", {}, (50, 150)),
    ("ig-resnet18-32-b8", "resnet18", {}, 32, 8, "ig", {}, (50, 150)),
    ("ig-resnet18-32-b1-r8", "resnet18", {}, 32, 1, "ig", {"restarts": 8}, (50, 150)),
    ("ig-resnet18-224-b1", "resnet18", {}, 224, 1, "ig", {}, (50, 150)),
]
CPU_CASES = {"dlg-lenet-32-b1": (5, 15), "ig-resnet18-32-b1": (5, 15), "ig-resnet18-32-b1-r8": (3, 8)}


def matmul_peak(device: torch.device, seconds: float = 1.0) -> float:
    """Measured float32 matrix-product TFLOP/s (4096^2 on a GPU, 1024^2 on the CPU)."""
    n = 1024 if device.type == "cpu" else 4096
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def problem(model_name, options, side, batch, device):
    model = build_model(model_name, num_classes=10, input_shape=(3, side, side), seed=0, **options).to(device)
    x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.arange(batch, device=device) % 10
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    return model, grads, y


def run(model, grads, y, side, attack, options, steps):
    start = time.perf_counter()
    rec = gradleak.reconstruct(model, grads, input_shape=(3, side, side), num_samples=len(y), labels=y,
                               attack=attack, iterations=steps, bounds="none", **options)
    return time.perf_counter() - start, rec.iterations


def step_flops(model, grads, y, side, attack, options) -> float:
    """FLOPs of one attack step: counted over 2 steps minus 1 step (set-up cancels)."""
    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            run(model, grads, y, side, attack, options, steps)
        counts.append(counter.get_total_flops())
    return float(counts[1] - counts[0])


def measure_case(case, device, quick: bool, variant: dict) -> dict:
    name, model_name, model_options, side, batch, attack, attack_options, steps = case
    if device.type == "cpu":
        steps = CPU_CASES[name]
    if quick:
        steps = (2, 4)
    options = {**attack_options, **variant.get("attack", {})}
    model, grads, y = problem(model_name, model_options, side, batch, device)
    run(model, grads, y, side, attack, options, steps[0])  # warm-up: kernels, caches, cuDNN choices
    sync(device)
    t1, i1 = run(model, grads, y, side, attack, options, steps[0])
    sync(device)
    t2, i2 = run(model, grads, y, side, attack, options, steps[1])
    sync(device)
    per_step = (t2 - t1) / (steps[1] - steps[0])  # one step of every restart (iterations count restart-steps)
    flops = step_flops(model, grads, y, side, attack, options)
    return {"case": name, "ms_per_step": 1000 * per_step, "gflop_per_step": flops / 1e9,
            "tflops": flops / per_step / 1e12 if per_step > 0 else None,
            "s_per_1000_steps": per_step * 1000, "steps": [i1, i2]}


def rgap_row(device) -> dict:
    model = build_model("cnn6", num_classes=1, input_shape=(3, 32, 32), seed=0).to(device)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    label = int(model(x)[0, 0] <= 0)
    training = gradleak.LocalTraining(loss="logistic")
    from gradleak.client import simulate_client

    update = simulate_client(model, x, torch.tensor([label], device=device), training)
    start = time.perf_counter()
    rec = gradleak.reconstruct(model, update, input_shape=(3, 32, 32), labels=[label], attack="rgap", bounds="none")
    seconds = time.perf_counter() - start
    psnr = gradleak.evaluate(rec.data.clamp(0, 1), x.cpu()).psnr_mean
    return {"case": "rgap-cnn6-32", "seconds": seconds, "psnr": psnr}


def sweep_row(device) -> dict:
    text = (f"name: bench\nbase: {{model: lenet, dataset: photos, attack: ig, device: '{device}', "
            "attack_options: {iterations: 100}}\ngrid: {indices: [0, 1, 2, 3]}\n")
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(text)
        gpus = ["--gpus", str(device.index or 0)] if device.type == "cuda" else []
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "gradleak.cli", "sweep", str(spec), "--store",
                               str(Path(tmp) / "s.sqlite"), "--workers", "2", "-q", *gpus], capture_output=True,
                              text=True)
        seconds = time.perf_counter() - start
    return {"case": "sweep-4-cells-2-workers", "seconds": seconds, "ok": proc.returncode == 0,
            "error": None if proc.returncode == 0 else proc.stderr[-500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=None, help="default: every device this machine has")
    parser.add_argument("--quick", action="store_true", help="a few steps per case: checks the script, not speed")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    devices = [resolve_device(d) for d in (args.devices or available_devices())]
    rows = []
    for device in devices:
        torch.set_num_threads(1 if device.type == "cpu" else os.cpu_count() or 1)
        Speed().apply()
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
        peak = matmul_peak(device)
        base = {"device": str(device), "device_name": name, "torch": torch.__version__, "matmul_peak_tflops": peak,
                "quick": args.quick}
        variants = [("default", {})]
        if device.type == "cuda":
            variants += [("sync-every-step", {"attack": {"sync_every": 1}}), ("tf32", {"speed": Speed(tf32=True)})]
        for case in CASES:
            if device.type == "cpu" and case[0] not in CPU_CASES:
                continue
            for label, variant in variants:
                if case[5] == "dlg" and label == "sync-every-step":
                    continue  # L-BFGS reads every step by design
                variant.get("speed", Speed()).apply()
                row = {**base, "variant": label, **measure_case(case, device, args.quick, variant)}
                row["peak_fraction"] = None if row["tflops"] is None else row["tflops"] / peak
                rows.append(row)
                print(json.dumps(row), flush=True)
                Speed().apply()
        for row in (rgap_row(device), sweep_row(device)):
            rows.append({**base, "variant": "default", **row})
            print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(f"appended {len(rows)} rows to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

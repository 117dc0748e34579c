"""Seconds per attack iteration and reconstruction quality: gradleak vs the plain-PyTorch floor.

The floor is the smallest gradient-matching loop one can write in PyTorch for the same
case (same model, same target, same starting point, same optimizer). Both run in the
same process, one thread, alternating, so the ratio is what matters.

    python benchmarks/bench_attacks.py            # all cases, writes benchmarks/results.json
    python benchmarks/bench_attacks.py --quick    # fewer iterations
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.restarts import restart_seeds
from gradleak.attacks.engine.objectives import cosine_distance, l2_distance, total_variation
from gradleak.data import load_dataset
from gradleak.client import simulate_client
from gradleak.metrics import evaluate_images
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge


def case_setup(model_name, batch, model_options):
    data = load_dataset("photos")
    images, labels = data.batch(list(range(batch)))
    x = data.normalization.normalize(images)
    model = build_model(model_name, num_classes=data.num_classes, input_shape=data.image_shape, seed=0,
                        **model_options)
    update = simulate_client(model, x, labels)
    knowledge = AttackerKnowledge(num_samples=batch, input_shape=data.image_shape, num_classes=data.num_classes,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=labels, bounds=data.normalization.bounds())
    return data, images, labels, model, update, knowledge


def start_point(knowledge, seed):
    gen = torch.Generator().manual_seed(restart_seeds(seed, 1)[0])
    return torch.randn((knowledge.num_samples, *knowledge.input_shape), generator=gen)


def geiping_loop(model, update, knowledge, labels, x, iterations, tv, on_iteration=None):
    """Geiping's recipe in plain PyTorch from start `x`: cosine + TV, signed Adam (lr 0.1),
    lr / 10 at 3/8, 5/8 and 7/8 of `iterations`, clamp to the box. `on_iteration(it, x)`
    may return True to stop early. Returns the last iterate."""
    params = list(model.parameters())
    target = update.tensors
    x = x.clone().requires_grad_(True)
    low = torch.tensor(knowledge.bounds[0]).reshape(1, -1, 1, 1)
    high = torch.tensor(knowledge.bounds[1]).reshape(1, -1, 1, 1)
    opt = torch.optim.Adam([x], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)
    for it in range(1, iterations + 1):
        opt.zero_grad()
        grads = torch.autograd.grad(F.cross_entropy(model(x), labels), params, create_graph=True)
        loss = cosine_distance(grads, target) + tv * total_variation(x)
        loss.backward()
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(min=low, max=high)
        if on_iteration is not None and on_iteration(it, x):
            break
    return x.detach()


def floor_ig(model, update, knowledge, labels, iterations, tv, seed):
    """Geiping's recipe in plain PyTorch (`geiping_loop`) from the attack's start, timed."""
    t = time.perf_counter()
    x = geiping_loop(model.eval(), update, knowledge, labels, start_point(knowledge, seed), iterations, tv)
    return x, time.perf_counter() - t


def floor_dlg(model, update, knowledge, labels, iterations, seed):
    """DLG with known labels in plain PyTorch: L2 gradient distance, L-BFGS lr 1."""
    model = model.eval()
    params = list(model.parameters())
    x = start_point(knowledge, seed).requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1)

    def closure():
        opt.zero_grad()
        grads = torch.autograd.grad(F.cross_entropy(model(x), labels), params, create_graph=True)
        loss = l2_distance(grads, update.tensors)
        loss.backward()
        return loss

    t = time.perf_counter()
    for _ in range(iterations):
        opt.step(closure)
    return x.detach(), time.perf_counter() - t


def psnr(data, x_pixels, norm):
    return evaluate_images(norm.denormalize(data).clamp(0, 1), x_pixels).psnr_mean


def run_case(name, model_name, attack, batch, iterations, model_options=None, repeats=2):
    data, images, labels, model, update, knowledge = case_setup(model_name, batch, model_options or {})
    norm = data.normalization
    rows = []
    for rep in range(repeats):
        if attack == "ig":
            tv = 1e-2
            xf, tf = floor_ig(model, update, knowledge, labels, iterations, tv, seed=rep)
            a = ATTACKS.get("ig")(iterations=iterations, tv=tv, restarts=1)
        else:
            xf, tf = floor_dlg(model, update, knowledge, labels, iterations, seed=rep)
            a = ATTACKS.get("dlg")(iterations=iterations, restarts=1, tol=0.0, patience=0, backtracking=False)
        t = time.perf_counter()
        rec = a.reconstruct(model, update, knowledge, seed=rep)
        to = time.perf_counter() - t
        rows.append({"floor_s": tf, "ours_s": to, "floor_psnr": psnr(xf, images, norm),
                     "ours_psnr": psnr(rec.data, images, norm), "same_result": bool(torch.allclose(xf, rec.data,
                                                                                               atol=1e-4))})
    floor = min(r["floor_s"] for r in rows) / iterations
    ours = min(r["ours_s"] for r in rows) / iterations
    return {"case": name, "iterations": iterations, "floor_s_per_it": floor, "ours_s_per_it": ours,
            "overhead": ours / floor - 1, "floor_psnr": rows[0]["floor_psnr"], "ours_psnr": rows[0]["ours_psnr"],
            "identical_iterates": all(r["same_result"] for r in rows)}


CASES = [
    ("DLG LeNet 32x32 b1", "lenet", "dlg", 1, 300, {}),
    ("IG ConvNet(w16) 32x32 b1", "convnet", "ig", 1, 200, {"width": 16}),
    ("IG ConvNet(w16) 32x32 b8", "convnet", "ig", 8, 200, {"width": 16}),
    ("IG ConvNet(w64) 32x32 b1", "convnet", "ig", 1, 20, {}),
    ("IG ConvNet(w64) 32x32 b8", "convnet", "ig", 8, 20, {}),
    ("IG ResNet-18 32x32 b1", "resnet18", "ig", 1, 10, {}),
    ("IG ResNet-18 32x32 b8", "resnet18", "ig", 8, 10, {}),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    parser.add_argument("--only", help="substring of the case names to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for name, model_name, attack, batch, iters, opts in CASES:
        if args.only and args.only not in name:
            continue
        if args.quick:
            iters = max(5, iters // 10)
        r = run_case(name, model_name, attack, batch, iters, opts)
        results.append(r)
        print(f"{name:28s} floor {r['floor_s_per_it'] * 1e3:8.1f} ms/it  ours {r['ours_s_per_it'] * 1e3:8.1f} ms/it"
              f"  overhead {r['overhead'] * 100:+5.1f}%  PSNR floor {r['floor_psnr']:5.1f} ours {r['ours_psnr']:5.1f}"
              f"  identical {r['identical_iterates']}", flush=True)
    meta = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 1}
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()

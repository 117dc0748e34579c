"""Batched restarts and time to quality: gradleak's attack loop vs the plain reference recipes.

Two parts, both one thread, reference and ours alternating in the same process:

  scaling  seconds per attack iteration with 1 restart and with 8 (batched, and one
           after another), FLOPs per iteration (torch.utils.flop_counter) and the
           achieved GFLOP/s next to this machine's one-thread matrix-product rate.
  ttq      time to quality over seeds: wall time until the attack's current answer
           (the lowest-loss restart's best iterate) first reaches the PSNR threshold,
           PSNR checks excluded from the clock, and the share of seeds that reach it
           within the recipe's budget. Reference recipes are written here in plain
           PyTorch: DLG = torch.optim.LBFGS(lr=1), 300 steps per restart, restarts one
           after another (Zhu et al. 2019); IG = signed Adam lr 0.1, cosine + TV,
           lr / 10 at 3/8, 5/8, 7/8 of the budget, box clamp (Geiping et al. 2020),
           restarts one after another. Ours = the gradleak attack: for DLG its
           defaults (4 stacked restarts, Armijo backtracking, halving after 10 and 30
           of its 1,000 steps), for IG the same budget with halving after 25% and 50%.

    python benchmarks/bench_restarts.py scaling
    python benchmarks/bench_restarts.py ttq --case dlg-lenet --seeds 0-19
    python benchmarks/bench_restarts.py ttq --case ig-convnet --seeds 0-9 --iterations 1000
Each run appends JSON lines to benchmarks/results_restarts.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.restarts import restart_seeds
from bench_attacks import geiping_loop  # the same plain-PyTorch IG recipe as the overhead benchmark
from gradleak.attacks.engine.objectives import l2_distance, total_variation
from gradleak.attacks.engine.stopping import evaluate_rows as _evaluate
from gradleak.attacks.engine.problem import Layout, build_problem, matching_objective
from gradleak.data import load_dataset
from gradleak.client import simulate_client
from gradleak.metrics import psnr
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge

OUT = Path(__file__).with_name("results_restarts.jsonl")


@dataclass
class Case:
    attack: str
    model: str
    model_options: dict
    threshold: float
    image_size: int = 32


CASES = {
    "dlg-lenet": Case("dlg", "lenet", {}, 30.0),
    "ig-convnet": Case("ig", "convnet", {"width": 16}, 20.0),
    "ig-resnet18": Case("ig", "resnet18", {}, 20.0),
}


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def setup(case: Case, seed: int, index: int):
    data = load_dataset("photos")
    images, labels = data.batch([index])
    x = data.normalization.normalize(images)
    model = build_model(case.model, num_classes=data.num_classes, input_shape=data.image_shape, seed=seed,
                        **case.model_options).eval()
    update = simulate_client(model, x, labels)
    norm = data.normalization
    given = case.attack == "ig"  # IG recovers the label analytically; give it to both sides alike
    knowledge = AttackerKnowledge(num_samples=1, input_shape=data.image_shape, num_classes=data.num_classes,
                                  label_knowledge=LabelKnowledge.GIVEN if given else LabelKnowledge.UNKNOWN,
                                  labels=labels if given else None, bounds=norm.bounds())

    def quality(model_space: torch.Tensor) -> float:
        return float(psnr(norm.denormalize(model_space.detach()).clamp(0, 1), images).mean())

    return model, update, knowledge, labels, quality


class Clock:
    """Wall time with the quality checks taken out."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def check(self, quality, data) -> float:
        t = time.perf_counter()
        value = quality(data)
        self.excluded += time.perf_counter() - t
        return value


# --- reference recipes, plain PyTorch ------------------------------------------------

def reference_dlg(model, update, knowledge, quality, threshold, seed, restarts, steps=300):
    params = list(model.parameters())
    target = update.tensors
    clock = Clock()
    for r, rseed in enumerate(restart_seeds(seed, restarts)):
        gen = torch.Generator().manual_seed(rseed)
        x = torch.randn((1, *knowledge.input_shape), generator=gen).requires_grad_(True)
        y = torch.randn(1, knowledge.num_classes, generator=gen).requires_grad_(True)
        opt = torch.optim.LBFGS([x, y], lr=1.0)

        def closure():
            opt.zero_grad()
            grads = torch.autograd.grad(F.cross_entropy(model(x), F.softmax(y, -1)), params, create_graph=True)
            loss = l2_distance(grads, target)
            loss.backward()
            return loss

        for step in range(1, steps + 1):
            opt.step(closure)
            if not torch.isfinite(x).all():
                break
            if clock.check(quality, x) >= threshold:
                return dict(success=True, seconds=clock.now(), restart=r, step=step)
    return dict(success=False, seconds=clock.now())


def reference_ig(model, update, knowledge, labels, quality, threshold, seed, restarts, iterations, tv, every=10):
    clock = Clock()
    for r, rseed in enumerate(restart_seeds(seed, restarts)):
        gen = torch.Generator().manual_seed(rseed)
        hit: dict = {}

        def check(it, x, _r=r):
            if it % every == 0 and clock.check(quality, x) >= threshold:
                hit.update(success=True, seconds=clock.now(), restart=_r, step=it)
                return True
            return False

        geiping_loop(model, update, knowledge, labels, torch.randn((1, *knowledge.input_shape), generator=gen),
                     iterations, tv, on_iteration=check)
        if hit:
            return hit
    return dict(success=False, seconds=clock.now())


# --- ours ------------------------------------------------------------------------------

def ours(case, model, update, knowledge, quality, threshold, seed, options, every):
    attack = ATTACKS.get(case.attack)(**options)
    clock = Clock()
    hit: dict = {}

    def callback(p):
        if p.iteration % every == 0 and clock.check(quality, p.data) >= threshold:
            hit.update(success=True, seconds=clock.now(), restart=p.restart, step=p.iteration, running=p.running)
            return True
        return False

    rec = attack.reconstruct(model, update, knowledge, seed=seed, callback=callback)
    out = hit or dict(success=False, seconds=clock.now())
    out["peak_memory_mib"] = round((rec.peak_memory_bytes or 0) / 2**20, 1)
    out["statuses"] = list(rec.restart_statuses)
    return out


def run_ttq(args) -> None:
    case = CASES[args.case]
    lo, hi = (int(v) for v in args.seeds.split("-"))
    for seed in range(lo, hi + 1):
        model, update, knowledge, labels, quality = setup(case, seed, index=seed)
        if case.attack == "dlg":
            ref = reference_dlg(model, update, knowledge, quality, case.threshold, seed, args.restarts)
            mine = ours(case, model, update, knowledge, quality, case.threshold, seed, {}, every=1)
        else:
            ref = reference_ig(model, update, knowledge, labels, quality, case.threshold, seed, args.restarts,
                               args.iterations, args.tv)
            mine = ours(case, model, update, knowledge, quality, case.threshold, seed,
                        dict(restarts=args.restarts, iterations=args.iterations, tv=args.tv,
                             halving=(0.25, 0.5), restart_mode=args.mode), every=10)
        row = dict(part="ttq", case=args.case, seed=seed, restarts=args.restarts, reference=ref, ours=mine)
        print(json.dumps(row), flush=True)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")


# --- scaling ---------------------------------------------------------------------------

def iteration_cost(case: Case, restarts: int, batched: bool) -> tuple[float, float]:
    """(seconds, GFLOP) of one objective + gradient evaluation over `restarts` rows."""
    model, update, knowledge, labels, _ = setup(case, 0, 0)
    problem = build_problem(model, update, knowledge)
    if case.attack == "dlg":
        layout = Layout(1, knowledge.input_shape, knowledge.num_classes)
        objective, _ = matching_objective(problem, layout, "l2", None, batched=batched)
    else:
        layout = Layout(1, knowledge.input_shape)
        objective, _ = matching_objective(problem, layout, "cosine", labels, batched=batched,
                                          prior=lambda x: 1e-2 * total_variation(x))
    width = layout.data_size + (knowledge.num_classes if case.attack == "dlg" else 0)
    rows = torch.randn(restarts, width, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        _evaluate(objective, rows)
    reps = 3 if case.model == "resnet18" else 30
    _evaluate(objective, rows)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            _evaluate(objective, rows)
        best = min(best, (time.perf_counter() - t) / reps)
    return best, counter.get_total_flops() / 1e9


def attack_step_cost(case: Case, restarts: int, batched: bool, iterations: int) -> float:
    """Seconds per attack iteration (an L-BFGS step of 20 evaluations for DLG), whole loop."""
    model, update, knowledge, _, _ = setup(case, 0, 0)
    options = dict(restarts=restarts, iterations=iterations, restart_mode="stacked" if batched else "sequential")
    if case.attack == "dlg":  # the loop's cost, not the algorithm's choices: every restart runs every step
        options.update(tol=0.0, patience=0, halving=None, backtracking=False)
    rec = ATTACKS.get(case.attack)(**options).reconstruct(model, update, knowledge, seed=0)
    return rec.seconds / (rec.iterations / restarts)


def run_scaling(args) -> None:
    peak = matmul_peak()
    print(f"one-thread 2048^3 matrix product: {peak:.1f} GFLOP/s", flush=True)
    for name in args.cases.split(","):
        case = CASES[name]
        one, one_flops = iteration_cost(case, 1, batched=False)
        eight, eight_flops = iteration_cost(case, 8, batched=True)
        seq = one * 8
        steps = 3 if case.model == "resnet18" else (20 if case.attack == "dlg" else 10)
        step1 = attack_step_cost(case, 1, False, steps)
        step8 = attack_step_cost(case, 8, True, steps)
        row = dict(part="scaling", case=name, peak_gflops=round(peak, 1),
                   eval_1_s=round(one, 5), eval_8_batched_s=round(eight, 5), eval_8_sequential_s=round(seq, 5),
                   eval_ratio_8_over_1=round(eight / one, 2),
                   gflop_1=round(one_flops, 3), gflop_8=round(eight_flops, 3),
                   gflops_1=round(one_flops / one, 1), gflops_8=round(eight_flops / eight, 1),
                   share_of_peak_8=round(eight_flops / eight / peak, 3),
                   step_1_s=round(step1, 4), step_8_batched_s=round(step8, 4),
                   step_ratio_8_over_1=round(step8 / step1, 2))
        print(json.dumps(row), flush=True)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")


def summarize(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for name in sorted({r["case"] for r in rows if r["part"] == "ttq"}):
        sel = [r for r in rows if r["part"] == "ttq" and r["case"] == name]
        for side in ("reference", "ours"):
            ok = [r[side]["seconds"] for r in sel if r[side]["success"]]
            med = statistics.median(ok) if ok else float("nan")
            print(f"{name:12s} {side:9s} success {len(ok)}/{len(sel)}  median time to threshold {med:.1f} s")
        both = [r for r in sel if r["reference"]["success"] and r["ours"]["success"]]
        if both:
            ratio = statistics.median(r["ours"]["seconds"] / r["reference"]["seconds"] for r in both)
            print(f"{name:12s} median per-seed ratio ours/reference {ratio:.2f} over {len(both)} seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    s = sub.add_parser("scaling")
    s.add_argument("--cases", default="dlg-lenet,ig-convnet,ig-resnet18")
    t = sub.add_parser("ttq")
    t.add_argument("--case", choices=sorted(CASES), required=True)
    t.add_argument("--seeds", default="0-19")
    t.add_argument("--restarts", type=int, default=8, help="reference restarts (and ours for IG)")
    t.add_argument("--iterations", type=int, default=1000, help="IG budget per restart")
    t.add_argument("--tv", type=float, default=1e-2)
    t.add_argument("--mode", default="stacked", help="ours: restart_mode for IG (interleaved suits the ConvNet)")
    sub.add_parser("summary")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__}))
    {"scaling": run_scaling, "ttq": run_ttq, "summary": lambda a: summarize(OUT)}[args.part](args)


if __name__ == "__main__":
    main()

"""Acceptance measurements for the defenses of issue 4 (one JSON row per image and setting).

    soteria:  inverting gradients against Soteria at 60%, plainly and with the defended
              layer dropped from the objective (Balunovic et al. 2022's adaptive attack)
    precode:  inverting gradients and the analytic first-layer inversion against PRECODE
    tradeoff: inverting gradients under QSGD, top-k, flat clipping and no defense, beside
              `gradleak utility`'s test accuracy for the same defense (SoK insight 6)

    python experiments/defense_acceptance.py soteria --out experiments/defense_acceptance.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.pipelines.audit import AuditConfig, run_audit
from gradleak.pipelines.federated import FederatedTraining
from gradleak.pipelines.utility import UtilityConfig, run_utility

SMALL_CNN = {"model": "lenet", "model_options": {"activation": "relu", "init": "default"}}


def audit_row(images, **settings) -> list[dict]:
    rows = []
    for index in images:
        config = AuditConfig(dataset="photos", indices=(index,), batch_size=1, give_labels=True, seed=index, **settings)
        start = time.perf_counter()
        run = run_audit(config)
        rows.append({"image": index, "psnr": run.result.metrics.psnr_mean, "ssim": run.result.metrics.ssim_mean,
                     "status": run.result.status, "seconds": round(time.perf_counter() - start, 2),
                     "defenses": list(run.result.defenses), "attack": settings["attack"],
                     "attack_options": dict(settings.get("attack_options", {})), "model": settings["model"],
                     "model_options": dict(settings.get("model_options", {}))})
    return rows


def soteria(args) -> list[dict]:
    ig = {"iterations": args.iterations, "tv": 1e-2}
    rows = audit_row(args.images, attack="ig", attack_options=ig, **SMALL_CNN)
    rows += audit_row(args.images, attack="ig", attack_options=ig, defenses=("soteria:rate=0.6",), **SMALL_CNN)
    rows += audit_row(args.images, attack="ig", attack_options=ig | {"skip": ("7.weight",)},
                      defenses=("soteria:rate=0.6",), **SMALL_CNN)
    return rows


def precode(args) -> list[dict]:
    model = {"model": "precode", "model_options": {"base": "mlp", "k": 64}}
    rows = audit_row(args.images, attack="ig", attack_options={"iterations": args.iterations, "tv": 1e-2}, **model)
    rows += audit_row(args.images, attack="analytic-fc", **model)
    return rows


TRADEOFF = ((), ("qsgd:bits=4",), ("qsgd:bits=2",), ("qsgd:bits=1",), ("topk:keep=0.1",),
            ("valueclip:bound=0.01",), ("valueclip:bound=0.001",))


def tradeoff(args) -> list[dict]:
    rows = []
    for defenses in TRADEOFF:
        attack = audit_row(args.images, attack="ig", attack_options={"iterations": args.iterations, "tv": 1e-2},
                           defenses=defenses, **SMALL_CNN)
        utility = run_utility(UtilityConfig(defenses=defenses, federated=FederatedTraining(rounds=args.rounds)))
        result = utility.defended or utility.baseline
        for row in attack:
            row["utility_accuracy"] = result.accuracy
            row["utility_baseline"] = utility.baseline.accuracy
        rows += attack
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["soteria", "precode", "tradeoff"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, nargs="+", default=list(range(10, 20)))
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {"soteria": soteria, "precode": precode, "tradeoff": tradeoff}[args.experiment](args)
    with open(args.out, "a") as fh:
        for row in rows:
            fh.write(json.dumps(row | {"experiment": args.experiment, "iterations": args.iterations}) + "\n")
    by = {}
    for row in rows:
        key = (row["attack"], " ".join(row["defenses"]) or "none", json.dumps(row["attack_options"].get("skip")))
        by.setdefault(key, []).append(row)
    for key, group in by.items():
        extra = f" utility {group[0]['utility_accuracy']:.3f}" if "utility_accuracy" in group[0] else ""
        print(*key, f"PSNR {sum(r['psnr'] for r in group) / len(group):.2f}", extra, flush=True)


if __name__ == "__main__":
    main()

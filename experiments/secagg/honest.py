"""Honest attacks on a secure aggregate: 10 clients x 8 images against 1 client x 8.

Run (from the repository root):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/honest.py [--iterations 300] [--seeds 3]
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/honest.py --attack spear --seeds 3
(`--attack spear`: SPEAR, exact batch recovery from a ReLU FC layer, on the MLP; writes honest_spear.*)
Writes experiments/secagg/honest.jsonl and honest.md.

The server is honest (sends the global LeNet, sigmoid, untrained) and sees only the
weighted mean of the clients' FedSGD gradients (`gradleak.client.aggregate_clients`), which
for FedSGD equals the gradient of the mean loss over all clients' images: the attack (IG,
Geiping et al. 2020, cosine distance + TV) runs unchanged with a batch of every sample
behind the aggregate (80), labels given (the strongest honest attacker), and is scored
against all 80 (Hungarian matching on MSE). Photos train split, 32x32; client j holds
images 8j..8j+7 of a seeded permutation (disjoint batches).

BRR / WSRR (`gradleak.metrics.leak`): PSNR >= 18 dB and shift-tolerant LPIPS (`stlpips`, whose
weights ship in a wheel; the standard LPIPS weights are not available offline) <= 0.1, as
the SoK small-scale recipes do. Scaled down: IG runs `--iterations` (default 300) of
its usual 2000-24000, one restart.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import aggregate_clients
from gradleak.data.registry import load_dataset
from gradleak.metrics import score_reconstruction
from gradleak.metrics.leak import leak_rates
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge

OUT = Path(__file__).resolve().parent


def run(clients: int, per: int, seed: int, iterations: int, attack: str = "ig", model_name: str = "lenet",
        options: dict | None = None) -> dict:
    data = load_dataset("photos", None, split="train")
    norm = data.normalization
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: clients * per]
    held = [order[j * per:(j + 1) * per] for j in range(clients)]
    batches = [(norm.normalize(data.images[h]), data.labels[h]) for h in held]
    model = build_model(model_name, num_classes=data.num_classes, input_shape=data.image_shape, seed=seed)
    agg = aggregate_clients(model, batches, seed=seed)
    labels = torch.cat([y for _, y in batches])
    knowledge = AttackerKnowledge(num_samples=agg.update.num_samples, input_shape=data.image_shape,
                                  num_classes=data.num_classes, label_knowledge=LabelKnowledge.GIVEN, labels=labels)
    t0 = time.perf_counter()
    opts = {"iterations": iterations} if attack == "ig" else dict(options or {})
    rec = ATTACKS.create(attack, opts).reconstruct(model, agg.update, knowledge, seed=seed)
    seconds = time.perf_counter() - t0
    scored = score_reconstruction(rec, data.images[order], normalization=norm, true_labels=labels,
                                  metrics=("psnr", "stlpips"))
    psnr = list(scored.metrics.psnr)
    perceptual = list(scored.metrics.values["stlpips"])
    return {"attack": attack, "model": model_name, "options": opts, "status": rec.status, "clients": clients, "per_client": per, "samples": agg.update.num_samples, "seed": seed,
            "iterations": iterations, "psnr": psnr, "stlpips": perceptual, "psnr_mean": sum(psnr) / len(psnr), "psnr_max": max(psnr),
            "attack_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--attack", default="ig", help="ig, or spear (exact, honest; on the ReLU MLP)")
    parser.add_argument("--budget", type=int, default=200_000, help="spear's proposal budget")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    model_name = "lenet" if args.attack == "ig" else "mlp"
    stem = "honest" if args.attack == "ig" else f"honest_{args.attack}"
    with open(OUT / f"{stem}.jsonl", "w") as f:
        for clients in (1, 10):
            for s in range(args.seeds):
                r = run(clients, 8, s, args.iterations, args.attack, model_name,
                        {"budget": args.budget} if args.attack == "spear" else None)
                rows.append(r)
                f.write(json.dumps(r) + "\n")
                f.flush()
    what = (f"IG, {args.iterations} iterations (LeNet" if args.attack == "ig" else
            f"{args.attack}, budget {args.budget} (MLP 256-256 ReLU")
    md = [f"# Honest {what}, photos 32x32, FedSGD, labels given) on the secure aggregate", "",
          f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/honest.py --attack {args.attack} "
          f"--iterations {args.iterations} --budget {args.budget} --seeds {args.seeds}`", "",
          "BRR/WSRR: PSNR >= 18 dB and stlpips <= 0.1 (standard LPIPS weights not available offline).", "",
          "| clients x per client | samples behind the update | seeds | BRR | WSRR | mean PSNR | best PSNR | attack s | "
          "status |", "|---|---|---|---|---|---|---|---|---|"]
    for clients in (1, 10):
        part = [r for r in rows if r["clients"] == clients]
        rates = leak_rates([(r["psnr"], r["stlpips"]) for r in part])
        md.append(f"| {clients} x 8 | {part[0]['samples']} | {len(part)} | {rates.brr:.3f} | {rates.wsrr:.3f} | "
                  f"{sum(r['psnr_mean'] for r in part) / len(part):.2f} | {max(r['psnr_max'] for r in part):.2f} | "
                  f"{sum(r['attack_s'] for r in part) / len(part):.0f} | {', '.join(r.get('status', '') for r in part)} |")
    (OUT / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()

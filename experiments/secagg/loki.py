"""LOKI-style model inconsistency through secure aggregation, on built-in data at 32x32.

Run (from the repository root; 100 clients take minutes on a shared core; one seed for them):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/loki.py [--quick]
Writes experiments/secagg/loki.jsonl (one row per run) and loki.md.

Each run: N clients each hold `per` images; the `loki` server sends client j a LeNet with
an imprint block of N * bins rows of which only client j's `bins` are live (thresholds: a
Gaussian fitted to the data set's test split, the server's public data); the clients
train unchanged (FedSGD, or FedAvg where said) and the server sees only the weighted sum.
A recovered row counts when its best match among all images of the pool (pixel PSNR) is
>= 40 dB AND that image is one client j held, j the client the read-out attributed the
row to ("recovered and correctly attributed"). Baseline: the plain imprint server sending
everyone one model with the same N * bins bins (it recovers samples from the sum but
cannot say whose they are).

photos has 125 train images: each client draws its 8 from them independently (batches
of different clients overlap when N * per > 125; an image two clients hold counts as
correctly attributed to either). digits (1438 train images) gives disjoint batches.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gradleak.attacks.imprint import read_bins
from gradleak.attacks.loki import loki_readout
from gradleak.client import aggregate_clients
from gradleak.data.registry import load_dataset
from gradleak.models import build_model
from gradleak.records import LocalTraining
from gradleak.server import parse_server

OUT = Path(__file__).resolve().parent


def psnr_to_pool(rec_pixels: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best PSNR (data range 1) of every recovered row against the pool, and the pool index."""
    mse = torch.cdist(rec_pixels.flatten(1).double(), pool.flatten(1).double()) ** 2 / pool[0].numel()
    best, idx = mse.min(1)
    return 10 * torch.log10(1.0 / best.clamp_min(1e-30)), idx


def run(dataset: str, clients: int, per: int, bins: int, seed: int, training=LocalTraining(),
        disjoint: bool = False) -> dict:
    data = load_dataset(dataset, None, split="train")
    norm = data.normalization
    public = norm.normalize(load_dataset(dataset, None, split="test").images)
    gen = torch.Generator().manual_seed(seed)
    if disjoint:
        order = torch.randperm(len(data), generator=gen)[: clients * per]
        held = [order[j * per:(j + 1) * per] for j in range(clients)]
    else:
        held = [torch.randperm(len(data), generator=gen)[:per] for _ in range(clients)]
    batches = [(norm.normalize(data.images[h]), data.labels[h]) for h in held]
    model = build_model("lenet", num_classes=data.num_classes, input_shape=data.image_shape, seed=seed)
    t0 = time.perf_counter()
    server = parse_server(f"loki:clients={clients},bins={bins},estimate=gaussian")
    models = server.build_clients(model, data.image_shape, seed=seed, public=public)
    agg = aggregate_clients(models.model, batches, training, seed=seed)
    t1 = time.perf_counter()
    rec = loki_readout(models, agg.update, agg.holdings.sizes)
    t2 = time.perf_counter()
    psnr, idx = psnr_to_pool(norm.denormalize(rec.data), data.images)
    correct = 0
    for r in range(len(rec.data)):
        if psnr[r] >= 40 and bool((held[int(rec.client[r])] == idx[r]).any()):
            correct += 1
    total = clients * per
    # baseline: one imprint model (N * bins bins) for everyone; read the sum, no attribution possible
    plain = parse_server(f"imprint:bins={clients * bins},estimate=gaussian").build(model, data.image_shape,
                                                                                  seed=seed, public=public)
    agg_plain = aggregate_clients(plain.model, batches, training, seed=seed)
    m = agg_plain.update.as_mapping()
    flat, found = read_bins(m["imprint.bins.weight"], m["imprint.bins.bias"], -plain.model.imprint.bins.bias.detach(),
                            total)
    p_plain, _ = psnr_to_pool(norm.denormalize(flat[: len(found)].reshape(-1, *data.image_shape)), data.images)
    exp = models.server_model(0).expected(per)
    return {"dataset": dataset, "clients": clients, "per_client": per, "bins_per_client": bins, "seed": seed,
            "protocol": training.protocol.value, "local_batch": training.batch_size, "disjoint": disjoint,
            "samples": total, "read": len(rec.data), "recovered_attributed_40": correct / total,
            "expected_server": exp.fraction, "plain_imprint_recovered_40_unattributed": float((p_plain >= 40).sum()) / total,
            "clients_s": t1 - t0, "readout_s": t2 - t1}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite loki.md from loki.jsonl")
    args = parser.parse_args()
    if args.report:
        report([json.loads(line) for line in open(OUT / "loki.jsonl")])
        return
    torch.set_num_threads(1)
    seeds = range(1 if args.quick else 3)
    fedavg = LocalTraining(protocol="fedavg", lr=0.1, batch_size=4)
    plan = [("photos", 1, 8, 64, LocalTraining(), False), ("photos", 10, 8, 64, LocalTraining(), False),
            ("photos", 100, 8, 64, LocalTraining(), False), ("photos", 10, 32, 64, LocalTraining(), False),
            ("photos", 10, 8, 64, fedavg, False),
            ("digits", 10, 8, 64, LocalTraining(), True), ("digits", 100, 8, 64, LocalTraining(), True)]
    rows = []
    with open(OUT / "loki.jsonl", "w") as f:
        for dataset, n, per, bins, training, disjoint in plan:
            for s in (seeds if n < 100 else seeds[:1]):  # 100 clients: one seed (minutes each here)
                row = run(dataset, n, per, bins, s, training, disjoint)
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), flush=True)
    report(rows)


def report(rows: list[dict]) -> None:
    md = ["# LOKI-style model inconsistency through secure aggregation (LeNet 32x32, weighted sum)", "",
          "Command: `OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/loki.py`", "",
          "| data | clients x per client | bins/client | protocol | seeds | recovered & attributed >= 40 dB | "
          "expected (server) | plain imprint, same bins, recovered (unattributed) | clients + sum s | read-out s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in rows:
        k = (r["dataset"], r["clients"], r["per_client"], r["bins_per_client"], r["protocol"], r["local_batch"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        part = [r for r in rows if (r["dataset"], r["clients"], r["per_client"], r["bins_per_client"], r["protocol"],
                                    r["local_batch"]) == k]
        mean = lambda key: sum(r[key] for r in part) / len(part)  # noqa: E731
        proto = k[4] + ("" if k[5] is None else f" (local batch {k[5]}, lr 0.1)")
        md.append(f"| {k[0]} | {k[1]} x {k[2]} | {k[3]} | {proto} | {len(part)} | {mean('recovered_attributed_40'):.3f} "
                  f"| {mean('expected_server'):.3f} | {mean('plain_imprint_recovered_40_unattributed'):.3f} | "
                  f"{mean('clients_s'):.1f} | {mean('readout_s'):.2f} |")
    (OUT / "loki.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()

"""Robbing the Fed's imprint on the built-in data sets, measured against the expectation.

Run (from the repository root, about 3 minutes on one core):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/malicious/imprint.py [--quick]
Writes experiments/malicious/imprint.jsonl (one row per attack) and imprint.md (the tables).

Every row: the client (LeNet, eval mode, FedSGD unless said) trains the model the imprint
server sent; the `imprint` attack reads its update; reconstructions are matched to the
originals (Hungarian, MSE) and a sample counts as recovered at PSNR >= 40 dB (and
>= 18 dB). `expected` is the server's expectation before the attack (its bins equally
likely); `expected_true` the same formula with each bin's share of the client's whole
data set (what the bins really are, after the estimation error); `expected_population`
the same for a batch drawn without replacement from that finite data set (what the
audit does; for photos, 125 images, it differs from the i.i.d. formula).
"""

from __future__ import annotations

import argparse
import math
import json
import statistics
import time
from pathlib import Path

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data.registry import load_dataset
from gradleak.metrics import score_reconstruction
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LocalTraining
from gradleak.server import expected_recovery, parse_server

OUT = Path(__file__).resolve().parent


def as_client_images(public: torch.Tensor, channels: int) -> torch.Tensor:
    """Public pixel images converted to the client's channel count (gray repeated, colour averaged)."""
    if public.shape[1] == channels:
        return public
    if public.shape[1] == 1:
        return public.expand(-1, channels, -1, -1)
    return public.mean(1, keepdim=True).expand(-1, channels, -1, -1)


def true_shares(server, data_x: torch.Tensor) -> list[float]:
    """Each bin's share of the client's whole data set (model space)."""
    block = server.model.imprint.bins
    m = data_x.flatten(1) @ block.weight[0].detach() / 1.0
    c = (-block.bias.detach()).sort().values
    idx = torch.searchsorted(c, m.contiguous()) - 1
    counts = torch.bincount(idx[idx >= 0], minlength=len(c)).double()
    return (counts / len(m)).tolist()


def expected_population(counts: list[int], population: int, batch: int) -> float:
    """The expected recovered fraction when the batch is drawn without replacement from a
    population of `population` images of which counts[i] fall in bin i: a sample in bin i
    is alone when the other batch - 1 draws avoid the bin's other counts[i] - 1 images."""
    total = 0.0
    for c in counts:
        if c:
            total += c / population * math.comb(population - c, batch - 1) / math.comb(population - 1, batch - 1)
    return total


def run(dataset: str, public: str, bins: int, batch: int, seed: int, *, training=LocalTraining(),
        extra: str = "", public_split: str = "test") -> dict:
    data = load_dataset(dataset, None, split="train")
    norm = data.normalization
    pub = load_dataset(public, None, split=public_split if public == dataset else "train")
    pub_x = norm.normalize(as_client_images(pub.images, data.image_shape[0]))
    model = build_model("lenet", num_classes=data.num_classes, input_shape=data.image_shape, seed=seed)
    spec = f"imprint:bins={bins}{extra}"
    server = parse_server(spec).build(model, data.image_shape, seed=seed, public=pub_x)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:batch].tolist()
    images, labels = data.batch(idx)
    x = norm.normalize(images)
    update = simulate_client(server.model, x, labels, training, seed=seed)
    knowledge = AttackerKnowledge(num_samples=batch, input_shape=data.image_shape, num_classes=data.num_classes,
                                  server=server.spec)
    t0 = time.perf_counter()
    rec = ATTACKS.create("imprint", {}).reconstruct(server.model, update, knowledge, seed=seed)
    seconds = time.perf_counter() - t0
    psnr = torch.tensor(score_reconstruction(rec, images, normalization=norm, true_labels=labels).metrics.psnr)
    expected = server.expected(batch)
    shares = true_shares(server, norm.normalize(data.images))
    truth = expected_recovery(batch, probabilities=shares)
    population = expected_population([round(p * len(data)) for p in shares], len(data), batch)
    return {"dataset": dataset, "public": public if public != dataset else f"{dataset}:{public_split}",
            "server": server.spec, "bins": bins, "batch": batch, "seed": seed, "protocol": training.protocol.value,
            "local_batch": training.batch_size, "lr": training.lr,
            "recovered_40": float((psnr >= 40).float().mean()), "recovered_18": float((psnr >= 18).float().mean()),
            "expected": expected.fraction, "p_all": expected.p_all, "expected_true": truth.fraction, "expected_population": population,
            "bins_read": sum(1 for u in rec.units if u), "psnr_recovered_mean": float(psnr[psnr >= 40].mean())
            if (psnr >= 40).any() else None, "attack_s": seconds, "assumptions": [int(a) for a in rec.assumptions]}


def summarize(rows: list[dict], label: str) -> str:
    def mean(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return statistics.mean(vals) if vals else float("nan")

    return (f"| {label} | {len(rows)} | {mean('recovered_40'):.3f} | {mean('recovered_18'):.3f} | "
            f"{mean('expected'):.3f} | {mean('expected_true'):.3f} | {mean('expected_population'):.3f} | "
            f"{mean('psnr_recovered_mean'):.1f} | "
            f"{mean('attack_s') * 1000:.0f} |")


HEADER = ("| setting | seeds | recovered >= 40 dB | recovered >= 18 dB | expected (server) | expected (true bins) "
          "| expected (true bins, drawn without replacement) | PSNR of recovered | attack ms |\n"
          "|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer seeds and batch sizes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(3 if args.quick else 10)
    rows, md = [], ["# Imprint (Robbing the Fed) on built-in data, LeNet 32x32", ""]

    md += ["## Acceptance: 128 bins, batch 64, FedSGD, photos", "", HEADER]
    for label, public, extra in [("bins from photos test split (quantiles)", "photos", ""),
                                 ("bins from photos test split (fitted Gaussian)", "photos", ",estimate=gaussian"),
                                 ("bins from digits (quantiles)", "digits", ""),
                                 ("bins from faces (quantiles)", "faces", ""),
                                 ("brightness, bins from photos test split", "photos", ",measure=brightness")]:
        part = [run("photos", public, 128, 64, s, extra=extra) for s in seeds]
        rows += part
        md.append(summarize(part, label))

    md += ["", "## FedAvg: batch 64, 4 local steps of 16 (lr 0.1), 128 bins, photos", "", HEADER]
    fedavg = LocalTraining(protocol="fedavg", lr=0.1, batch_size=16)
    for label, extra in [("shared back column (default)", ""), ("per-bin back columns (the paper's)", ",back=per-bin"),
                         ("shared, scale=0.01", ",scale=0.01")]:
        part = [run("photos", "photos", 128, 64, s, training=fedavg, extra=extra) for s in seeds]
        rows += part
        md.append(summarize(part, label))

    md += ["", "## Curve: recovered fraction (>= 40 dB) against batch size", "",
           "digits (1438 train images; bins from its test split) and photos (125 train images: batches up to 125).",
           "", "| data | bins | batch | seeds | measured | expected (server) | expected (true bins) | "
           "expected (true bins, without replacement) |", "|---|---|---|---|---|---|---|---|"]
    curve_seeds = range(2 if args.quick else 3)
    for dataset, batches in [("digits", (8, 16, 32, 64, 128, 256)), ("photos", (8, 16, 32, 64, 125))]:
        for bins in (64, 128, 256):
            for batch in batches:
                part = [run(dataset, dataset, bins, batch, s) for s in curve_seeds]
                rows += part
                m = statistics.mean(r["recovered_40"] for r in part)
                md.append(f"| {dataset} | {bins} | {batch} | {len(part)} | {m:.3f} | {part[0]['expected']:.3f} | "
                          f"{statistics.mean(r['expected_true'] for r in part):.3f} | "
                          f"{statistics.mean(r['expected_population'] for r in part):.3f} |")

    with open(OUT / "imprint.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (OUT / "imprint.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

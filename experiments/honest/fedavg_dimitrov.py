"""The FedAvg attack of Dimitrov et al. (TMLR 2022) against our one-step attacker, on digits.

Issue 20's acceptance setting: a client with 2 epochs x 4 mini-batches x 4 images (16 built-in
digits, shuffled every epoch with a seed the server does not know), local SGD; the paper's
FEMNIST setting (10 epochs x 10 batches x 5 images) scaled down. Attackers on the same updates:
`dimitrov` (level 3: knows epochs, batch size, lr; simulates them with per-epoch sets tied by the
order-invariant prior) and `ig` reading the delta as one gradient step (level 0, cosine + TV).
Labels are not given: dimitrov estimates the counts (`count` rule on the mean step), ig uses
the count rule too. A client's image is recovered when its matched reconstruction reaches
PSNR >= 18 dB. One JSON row per (client, attack):

    python experiments/honest/fedavg_dimitrov.py --out experiments/honest/fedavg_dimitrov.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.data import load_dataset
from gradleak.metrics import evaluate_images
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LocalTraining, Protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--first-client", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01, help="the client's local learning rate")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--image-size", type=int, default=32, help="digits resized to this square size")
    parser.add_argument("--attack", action="append", choices=("dimitrov", "ig"), help="default: both")
    parser.add_argument("--model-opt", action="append", default=[], help="key=value (YAML scalars)")
    parser.add_argument("--attack-opt", action="append", default=[], help="key=value for both attacks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import yaml

    model_options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.model_opt)}
    attack_options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.attack_opt)}
    data = load_dataset("digits").resized(args.image_size)
    model = build_model(args.model, num_classes=data.num_classes, input_shape=data.image_shape, seed=0,
                        **model_options)
    n = args.batches * args.batch_size
    training = LocalTraining(Protocol.FEDAVG, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                             shuffle=True)
    with open(args.out, "a") as fh:
        for client in range(args.first_client, args.first_client + args.clients):
            indices = list(range(client * n, (client + 1) * n))
            images, labels = data.batch(indices)
            update = simulate_client(model, data.normalization.normalize(images), labels, training,
                                     seed=1000 + client)  # the shuffling seed the server does not know
            for attack in args.attack or ("dimitrov", "ig"):
                knows = attack == "dimitrov"
                knowledge = AttackerKnowledge(num_samples=n, input_shape=data.image_shape,
                                              num_classes=data.num_classes, bounds=data.normalization.bounds(),
                                              knows_training=knows, training=training if knows else None)
                options = {"iterations": args.iterations, **attack_options}
                if attack == "ig":
                    options["label_rule"] = "count"
                start = time.perf_counter()
                rec = ATTACKS.create(attack, options).reconstruct(model, update, knowledge, seed=client)
                pixels = data.normalization.denormalize(rec.data).clamp(0, 1)
                metrics = evaluate_images(pixels, images, predicted_labels=rec.labels, true_labels=labels)
                psnr = list(metrics.values["psnr"])
                row = {"client": client, "attack": attack, "model": args.model, "model_options": model_options,
                       "image_size": args.image_size,
                       "attack_options": attack_options, "epochs": args.epochs, "batches": args.batches,
                       "batch_size": args.batch_size, "lr": args.lr, "iterations": args.iterations,
                       "psnr": sum(psnr) / n, "psnr_each": psnr,
                       "recovered": sum(p >= 18 for p in psnr) / n, "label_accuracy": metrics.label_accuracy,
                       "floor_psnr": sum(metrics.baseline_psnr) / n, "seconds": round(time.perf_counter() - start, 1)}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(client, attack, round(row["psnr"], 2), row["recovered"], row["seconds"], flush=True)


if __name__ == "__main__":
    main()

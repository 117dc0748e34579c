"""`gradleak rank` and `gradleak rgap`: R-GAP's rank analysis and the paper's demo command lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradleak.errors import GradleakError

DEFAULT_SHAPES = {"fcn3": (1, 28, 28)}


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 3,32,32, got {text!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return shape


def add_parsers(sub) -> None:
    p = sub.add_parser("rank", help="R-GAP rank analysis of a model: constraints, ranks, deficits, risk index",
                       description="Count each weight layer's unknowns and constraints and compute their rank "
                                   "(R-GAP, Zhu & Blaschko 2021), before any attack.")
    p.add_argument("-m", "--model", required=True, help="model name (see `gradleak list`) or FILE.py:FACTORY")
    p.add_argument("--input-shape", type=_shape, help="C,H,W (default 3,32,32; fcn3 1,28,28)")
    p.add_argument("--classes", type=int, default=1, help="outputs of the last layer (default 1: R-GAP's logit)")
    p.add_argument("-p", "--checkpoint", help="state_dict to analyse instead of a seeded random model")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and of the probe input")
    p.add_argument("--counts-only", action="store_true", help="skip the numerical ranks")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_rank)
    _utility_parser(sub)

    p = sub.add_parser("rgap", help="R-GAP's demo: invert one image or a batch over CNN6, CNN6-d or FCN3",
                       description="The R-GAP paper's command line: python main.py [-i N] [-m MODEL] [-d DATA] "
                                   "[-b B] [-p CHECKPOINT]. Random weights, logistic loss, misclassified label.")
    p.add_argument("-d", "--dataset", default="CIFAR10", help="CIFAR10 or MNIST (built-in data when absent)")
    p.add_argument("-i", "--index", type=int, default=-1, help="image to reconstruct (-1: a seeded random one)")
    p.add_argument("-b", "--batchsize", type=int, default=1, help="mini-batch size (inverted as one combination)")
    p.add_argument("-p", "--parameters", help="model checkpoint (state_dict) instead of random weights")
    p.add_argument("-m", "--model", default="CNN6", help="CNN6, CNN6-d or FCN3")
    p.add_argument("--data-root", help="folder holding the dataset's files")
    p.add_argument("--image-size", type=int, help="resize images to this square size (any size works)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", help="output folder (default runs/rgap-<model>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_rgap)


def cmd_rank(args: argparse.Namespace) -> int:
    import torch

    from gradleak.analysis import rank_analysis
    from gradleak.cli_render import rank_table
    from gradleak.models import build_model

    torch.set_num_threads(1)
    shape = args.input_shape or DEFAULT_SHAPES.get(args.model.lower(), (3, 32, 32))
    if args.classes < 1:
        raise GradleakError(f"--classes must be >= 1, got {args.classes}")
    model = build_model(args.model, num_classes=args.classes, input_shape=shape, seed=args.seed,
                        checkpoint=args.checkpoint)
    report = rank_analysis(model, shape, seed=args.seed, ranks=not args.counts_only)
    if args.json:
        print(json.dumps(report.to_json() | {"model": args.model}, indent=2))
    else:
        rank_table(report, args.model)
    return 0


def cmd_rgap(args: argparse.Namespace) -> int:
    import torch

    from gradleak.cli_render import rgap_table
    from gradleak.rgap_demo import run_rgap_demo

    torch.set_num_threads(1)
    out = Path(args.out) if args.out else Path("runs") / f"rgap-{args.model.lower()}"
    if out.exists() and not args.overwrite:
        raise GradleakError(f"output folder {str(out)!r} exists; pass --overwrite to replace it")
    demo = run_rgap_demo(model=args.model, dataset=args.dataset, index=args.index, batch_size=args.batchsize,
                         checkpoint=args.parameters, data_root=args.data_root, image_size=args.image_size,
                         seed=args.seed)
    write_demo(out, demo, args)
    rgap_table(demo, args.model, out)
    return 0


def write_demo(out: Path, demo, args: argparse.Namespace) -> None:
    """The labelled figure, the paper's three images and metrics.json, written all at once."""
    from gradleak.io import write_folder
    from gradleak.report import save_grid, save_image

    def fill(tmp: Path) -> None:
        batch = len(demo.indices)
        rec = demo.reconstruction.expand(batch, *demo.reconstruction.shape[1:])
        kind = "combination of the batch" if batch > 1 else "image"
        title = f"R-GAP on {args.model}, {kind}: PSNR {demo.metrics.psnr_mean:.1f} dB"
        save_grid(tmp / "rgap.png", demo.original, rec, psnr=list(demo.metrics.psnr),
                  labels=[f"#{i} y={2 * y - 1:+d}" for i, y in zip(demo.indices, demo.labels)], title=title)
        # the paper shows a batch side by side
        save_image(tmp / "origin.png", demo.original[0] if batch == 1 else _row(demo.original))
        save_image(tmp / "reconstructed.png", demo.reconstruction[0])
        save_image(tmp / "rescale_reconstructed.png", demo.reconstruction[0], rescale=True)
        record = demo.record
        summary = {"model": args.model, "dataset": args.dataset, "dataset_source": demo.dataset_source,
                   "fallback": demo.fallback, "indices": list(demo.indices), "labels": list(demo.labels),
                   "status": record.status, "seconds": record.seconds, "peak_memory_bytes": record.peak_memory_bytes,
                   "gradient_mismatch": list(record.restart_losses), "recovered_labels": record.labels.tolist(),
                   "metrics": demo.metrics.summary(), "psnr": list(demo.metrics.psnr), "ssim": list(demo.metrics.ssim),
                   "mse": list(demo.metrics.mse), "seed": args.seed, "checkpoint": args.parameters}
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))

    write_folder(out, fill)


def _row(images):
    import torch

    gap = torch.ones(images.shape[1], images.shape[2], 2)
    parts = []
    for img in images:
        parts += [img, gap]
    return torch.cat(parts[:-1], dim=2)


def _kv(text: str):
    from gradleak.cli import _kv as parse  # the attack command's KEY=VALUE parser (imported late: cycle)

    return parse(text)


def _utility_parser(sub) -> None:
    p = sub.add_parser("utility", help="federated training with and without a defense: its cost in test accuracy",
                       description="Train a model federatedly on built-in data with and without the defense and "
                                   "report the test accuracy of both.")
    p.add_argument("-d", "--dataset", default="digits", help="dataset (default digits)")
    p.add_argument("--data-root", help="folder holding the dataset files (file-based datasets)")
    p.add_argument("--image-size", type=int, help="resize images to this square size")
    p.add_argument("-m", "--model", default="lenet", help="model (default lenet with ReLU and torch's init)")
    p.add_argument("--model-opt", dest="model_options", type=_kv, action="append", metavar="KEY=VALUE")
    p.add_argument("--defense", dest="defenses", action="append", metavar="SPEC", default=[],
                   help="defense applied to every client's update, repeatable (e.g. qsgd:bits=4)")
    p.add_argument("--dp-noise", type=float, help="DP-SGD clients (Opacus) at this noise multiplier")
    p.add_argument("--dp-clip", type=float, default=1.0, help="DP-SGD per-sample clipping norm")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--protocol", choices=["fedavg", "fedsgd"], default="fedavg")
    p.add_argument("--lr", type=float, default=0.05, help="client learning rate")
    p.add_argument("--epochs", type=int, default=1, help="local epochs (fedavg)")
    p.add_argument("--local-batch-size", type=int, default=32, help="local mini-batch size (fedavg)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", help="write the report as JSON to this file")
    p.set_defaults(func=cmd_utility)


def cmd_utility(args) -> int:
    import json

    import torch

    from gradleak.cli_render import utility_table
    from gradleak.fl.federated import FederatedConfig
    from gradleak.records import LocalTraining
    from gradleak.utility import UtilityConfig, run_utility

    torch.set_num_threads(1)
    training = LocalTraining(protocol=args.protocol, lr=args.lr, epochs=args.epochs,
                             batch_size=None if args.protocol == "fedsgd" else args.local_batch_size,
                             shuffle=args.protocol == "fedavg")
    options = {"activation": "relu", "init": "default"} if args.model == "lenet" else {}
    options.update(dict(args.model_options or []))
    config = UtilityConfig(dataset=args.dataset, data_root=args.data_root, image_size=args.image_size,
                           model=args.model, model_options=options,
                           federated=FederatedConfig(args.clients, args.rounds, training, seed=args.seed),
                           defenses=tuple(args.defenses), dp_noise_multiplier=args.dp_noise,
                           dp_max_grad_norm=args.dp_clip, seed=args.seed)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists():
        raise GradleakError(f"output file {str(out)!r} exists; choose another")
    report = run_utility(config)
    utility_table(report, config)
    if out is not None:
        from gradleak.io import atomic_write_text

        atomic_write_text(out, json.dumps(report.to_json(), indent=2))
    return 0

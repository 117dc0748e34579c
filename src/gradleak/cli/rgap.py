"""`gradleak rgap`: the R-GAP paper's demo command line, on our data and models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradleak.cli.args import add_device, add_seed, output_folder


def add_parser(sub) -> None:
    p = sub.add_parser("rgap", help="R-GAP's demo: invert one image or a batch over CNN6, CNN6-d or FCN3",
                       description="The R-GAP paper's command line: python main.py [-i N] [-m MODEL] [-d DATA] "
                                   "[-b B] [-p CHECKPOINT]. Random weights, logistic loss, misclassified label.")
    p.add_argument("-d", "--dataset", default="CIFAR10", help="CIFAR10 or MNIST (the paper's; built-in data when their files are absent), or any "
                        "registered dataset (`gradleak list`, folder included)")
    p.add_argument("-i", "--index", type=int, default=-1, help="image to reconstruct (-1: a seeded random one)")
    p.add_argument("-b", "--batchsize", type=int, default=1, help="mini-batch size (inverted as one combination)")
    p.add_argument("-p", "--parameters", help="model checkpoint (state_dict) instead of random weights")
    p.add_argument("-m", "--model", default="CNN6", help="CNN6, CNN6-d or FCN3")
    p.add_argument("--data-root", help="folder holding the dataset's files")
    p.add_argument("--image-size", type=int, help="resize images to this square size (any size works)")
    add_seed(p, help="seed of the model and of the random image")
    add_device(p, what="the client (R-GAP's least squares run on the CPU)")
    p.add_argument("-o", "--out", help="output folder (default runs/rgap-<model>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_rgap)


def cmd_rgap(args: argparse.Namespace) -> int:
    import torch

    from gradleak.checks import check_seed
    from gradleak.cli.render import rgap_table
    from gradleak.pipelines.rgap_demo import run_rgap_demo

    check_seed(args.seed)
    torch.set_num_threads(1)
    out = output_folder(args.out, Path("runs") / f"rgap-{args.model.lower()}", overwrite=args.overwrite)
    demo = run_rgap_demo(model=args.model, dataset=args.dataset, index=args.index, batch_size=args.batchsize,
                         checkpoint=args.parameters, data_root=args.data_root, image_size=args.image_size,
                         seed=args.seed, device=args.device)
    write_demo(out, demo, args)
    rgap_table(demo, args.model, out)
    return 0


def write_demo(out: Path, demo, args: argparse.Namespace) -> None:
    """The labelled figure, the paper's three images and metrics.json, written all at once."""
    from gradleak.io import write_folder
    from gradleak.pipelines.figures import save_grid, save_image

    def fill(tmp: Path) -> None:
        batch = len(demo.indices)
        rec = demo.reconstruction.expand(batch, *demo.reconstruction.shape[1:])
        kind = "combination of the batch" if batch > 1 else "image"
        title = (f"{demo.metrics.verdict.overall.value.upper()} - R-GAP on {args.model}, {kind}: "
                 f"PSNR {demo.metrics.psnr_mean:.1f} dB")
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
                   "verdict": demo.metrics.verdict.to_json(), "gradient_mismatch": record.gradient_mismatch,
                   "recovered_labels": record.labels.tolist(),
                   "metrics": demo.metrics.means(), "psnr": list(demo.metrics.psnr), "ssim": list(demo.metrics.ssim),
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

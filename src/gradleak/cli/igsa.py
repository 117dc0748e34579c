"""`gradleak igsa`: the SoK's Input-Gradient Smoothness Analysis of a model on dataset images."""

from __future__ import annotations

import argparse
import json

from gradleak.cli.args import add_device, add_seed, kv, options
from gradleak.errors import GradleakError


def add_parser(sub) -> None:
    p = sub.add_parser("igsa", help="Input-Gradient Smoothness Analysis: how smoothly each layer's gradient "
                                    "follows the input (higher = easier to invert)",
                       description="IGSA (Du et al., SoK, Sec. 5.1; our definition): per layer, the mean of "
                                   "1 / (1 + rho) with rho = R ||J v|| / ||g|| at random points and directions "
                                   "within an L2 ball around each image, weighted toward shallow layers.")
    p.add_argument("-m", "--model", required=True, help="model name (see `gradleak list`)")
    p.add_argument("-p", "--checkpoint", help="state_dict to analyse instead of a seeded random model")
    p.add_argument("--model-opt", dest="model_options", type=kv, action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (YAML value)")
    p.add_argument("-d", "--dataset", default="photos", help="dataset (default photos), train split")
    p.add_argument("--data-root", help="folder holding the dataset files (file-based datasets)")
    p.add_argument("-n", "--images", type=int, help="analyse the first N images of the split (default 8)")
    p.add_argument("-i", "--index", dest="indices", type=int, nargs="+", help="image indices instead of -n")
    p.add_argument("--radius", type=float, default=0.05,
                   help="RMS distance per input coordinate in the model's (normalized) space (default 0.05)")
    p.add_argument("--samples", type=int, default=8, help="random points per image (default 8)")
    p.add_argument("--weights", choices=["linear", "uniform"], default="linear",
                   help="layer weights: linear favours shallow layers (default), uniform")
    add_seed(p, help="seed of the model and of the random points")
    add_device(p, what="the model's gradients and Jacobians")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_igsa)


def cmd_igsa(args: argparse.Namespace) -> int:
    import torch

    from gradleak.analysis.igsa import igsa
    from gradleak.checks import check_seed
    from gradleak.data import DataSource, load_case
    from gradleak.devices import resolve_device

    check_seed(args.seed)
    torch.set_num_threads(1)
    if args.images is not None and args.indices:
        raise GradleakError(f"pass either -n/--images or -i/--index, got both ({args.images} and {args.indices})")
    model_options = options(args.model_options, "--model-opt")
    reserved = sorted(set(model_options) & {"name", "num_classes", "input_shape", "seed", "checkpoint"})
    if reserved:
        raise GradleakError(f"--model-opt must name model options, got {', '.join(reserved)} (set by the command)")
    device = resolve_device(args.device)
    case = load_case(DataSource(args.dataset, args.data_root), args.model, model_options=model_options,
                     checkpoint=args.checkpoint, seed=args.seed, device=device)
    data = case.data
    if args.indices:
        indices = list(args.indices)
    else:
        count = 8 if args.images is None else args.images
        if not 1 <= count <= len(data):
            raise GradleakError(f"--images must lie in [1, {len(data)}] for dataset {args.dataset!r}, got {count}")
        indices = list(range(count))
    pixels, labels = data.batch(indices)
    result = igsa(case.model, data.normalization.normalize(pixels).to(device), labels.to(device), radius=args.radius, samples=args.samples,
                  weights=args.weights, seed=args.seed)
    if args.json:
        extra = {"model": args.model, "dataset": args.dataset, "indices": indices, "weighting": args.weights,
                 "seed": args.seed, "checkpoint": args.checkpoint, "model_options": model_options}
        print(json.dumps(result.to_json() | extra, indent=2, default=str))
    else:
        _table(result, args.model, args.dataset)
    return 0


def _table(result, model: str, dataset: str) -> None:
    from rich.table import Table

    from gradleak.cli.render import out_console

    table = Table(title=f"gradleak igsa: {model} on {dataset}, {result.images} image(s) x {result.samples} "
                        f"sample(s), radius {result.radius:g}",
                  caption="score = mean of 1 / (1 + rho); rho = R ||J v|| / ||g||: the layer gradient's "
                          "relative change over the radius")
    for name in ("layer", "weight", "score", "median rho"):
        table.add_column(name, justify="left" if name == "layer" else "right", no_wrap=True)
    for name, weight, score, rho in zip(result.layers, result.weights, result.layer_scores, result.layer_rho_median):
        table.add_row(name or "(model)", f"{weight:.3f}", f"{score:.4f}", f"{rho:.3g}")
    out_console.print(table)
    out_console.print(f"IGSA {result.score:.4f} (in (0, 1]; higher = smoother, easier gradient matching) "
                      f"in {result.seconds:.1f} s")

"""`gradleak rank`: R-GAP's rank analysis of a model, before any attack; with --exact, the
exact-leakage certificates per batch size (SPEAR's conditions and sampling cost, R-GAP's)."""

from __future__ import annotations

import argparse
import json

from gradleak.cli.args import add_device, add_seed, kv, options
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


def add_parser(sub) -> None:
    p = sub.add_parser("rank", help="R-GAP rank analysis of a model: constraints, ranks, deficits, risk index",
                       description="Count each weight layer's unknowns and constraints and compute their rank "
                                   "(R-GAP, Zhu & Blaschko 2021), before any attack.")
    p.add_argument("-m", "--model", required=True, help="model name (see `gradleak list`) or FILE.py:FACTORY")
    p.add_argument("--input-shape", type=_shape, help="C,H,W (default 3,32,32; fcn3 1,28,28)")
    p.add_argument("--classes", type=int, default=1, help="outputs of the last layer (default 1: R-GAP's logit)")
    p.add_argument("-p", "--checkpoint", help="state_dict to analyse instead of a seeded random model")
    add_seed(p, help="seed of the model and of the probe input")
    add_device(p, what="the float64 rank computations")
    p.add_argument("--counts-only", action="store_true", help="skip the numerical ranks")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--model-opt", dest="model_options", type=kv, action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (e.g. hidden=[1000])")
    g = p.add_argument_group("exact leakage (SPEAR for fully connected ReLU first layers, R-GAP)")
    g.add_argument("--exact", action="store_true",
                   help="per batch size: is the batch exactly recoverable, and at what sampling cost")
    g.add_argument("--max-batch", type=int, default=24, help="largest batch size to certify (default 24)")
    g.add_argument("--budget", type=int, default=2_000_000, help="SPEAR's proposal budget (default 2000000)")
    g.add_argument("-d", "--data", help="draw the probe batches from this data set (normalized) instead of N(0, 1)")
    p.set_defaults(func=cmd_rank)


def cmd_rank(args: argparse.Namespace) -> int:
    import torch

    from gradleak.analysis import rank_analysis
    from gradleak.checks import check_seed
    from gradleak.cli.render import rank_table
    from gradleak.devices import resolve_device
    from gradleak.models import build_model

    check_seed(args.seed)
    torch.set_num_threads(1)
    shape = args.input_shape or DEFAULT_SHAPES.get(args.model.lower(), (3, 32, 32))
    if args.classes < 1:
        raise GradleakError(f"--classes must be >= 1, got {args.classes}")
    device = resolve_device(args.device)
    model = build_model(args.model, num_classes=args.classes, input_shape=shape, seed=args.seed,
                        checkpoint=args.checkpoint, **options(args.model_options, "--model-opt"))
    if args.exact:
        return _exact(args, model, shape)
    analysis = rank_analysis(model, shape, seed=args.seed, ranks=not args.counts_only, device=device)
    if args.json:
        print(json.dumps(analysis.to_json() | {"model": args.model}, indent=2))
    else:
        rank_table(analysis, args.model)
    return 0


def _exact(args: argparse.Namespace, model, shape: tuple[int, ...]) -> int:
    from gradleak.analysis import exact_leakage
    from gradleak.cli.render import out_console

    inputs = None
    if args.data:
        from gradleak.data import load_dataset

        data = load_dataset(args.data, image_size=shape[-1])
        inputs = data.normalization.normalize(data.images)
    report = exact_leakage(model, shape, max_batch=args.max_batch, budget=args.budget, seed=args.seed, inputs=inputs)
    if args.json:
        print(json.dumps(report.to_json() | {"model": args.model}, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"gradleak rank --exact: {args.model} at input {'x'.join(map(str, shape))}"
                        + (f", probes from {args.data}" if args.data else ", N(0, 1) probes"),
                  caption=f"SPEAR: layer {report.spear_layer!r}, budget {report.budget} proposals; exact when its "
                          "conditions hold and the budget finds every sample with probability >= 0.99")
    for name in ("B", "SPEAR exact", "expected proposals", "P(budget suffices)", "fewest units off", "R-GAP exact"):
        table.add_column(name, justify="right", no_wrap=True)
    reasons: list[str] = []
    for row in report.rows:
        if row.spear_exact is False and row.spear_reason not in reasons:
            reasons.append(row.spear_reason)
        spear = ("n/a" if row.spear_exact is None else
                 "yes" if row.spear_exact else f"no ({reasons.index(row.spear_reason) + 1})")
        table.add_row(str(row.batch), spear,
                      "-" if row.expected_proposals is None else f"{row.expected_proposals:.3g}",
                      "-" if row.success_probability is None else f"{row.success_probability:.3f}",
                      "-" if row.min_zero_units is None else str(row.min_zero_units),
                      "n/a" if row.rgap_exact is None else ("yes" if row.rgap_exact else "no"))
    out_console.print(table)
    for i, reason in enumerate(reasons, 1):
        out_console.print(f"({i}) {reason}")
    if report.spear_ends:
        out_console.print(f"SPEAR's analysis ends at the first layer: {report.spear_ends}")
    if report.rgap_ends:
        out_console.print(f"R-GAP's analysis ends: {report.rgap_ends}")
    out_console.print(f"exactly recoverable by SPEAR for every batch size up to {report.spear_limit}")
    return 0

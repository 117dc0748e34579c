"""`gradleak rank`: R-GAP's rank analysis of a model, before any attack."""

from __future__ import annotations

import argparse
import json

from gradleak.cli.args import add_device, add_seed
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
                        checkpoint=args.checkpoint)
    analysis = rank_analysis(model, shape, seed=args.seed, ranks=not args.counts_only, device=device)
    if args.json:
        print(json.dumps(analysis.to_json() | {"model": args.model}, indent=2))
    else:
        rank_table(analysis, args.model)
    return 0

"""Command line: `gradleak attack`, `list`, `rank`, `rgap`, `utility`, `sweep`, `report`, `flower` and `igsa`.

Parsing (flags and YAML) happens here and only here; the library receives an
`AuditConfig`. User mistakes print one line and exit 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from gradleak.cli_analysis import add_parsers as add_analysis_parsers
from gradleak.cli_flower import add_parsers as add_flower_parsers
from gradleak.cli_igsa import add_parsers as add_igsa_parsers
from gradleak.cli_report import add_parsers as add_report_parsers
from gradleak.cli_sweep import add_parsers as add_sweep_parsers
from gradleak.errors import GradleakError

EXIT_USER_ERROR = 2


def _kv(text: str) -> tuple[str, Any]:
    """Parse `key=value` with YAML scalars (numbers, booleans, lists)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value else None
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip().replace("-", "_"), parsed


def _attack_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("attack", help="simulate a client update, attack it, measure the leak",
                       description="Reconstruct a client's private images from the update it shares.")
    g = p.add_argument_group("data")
    g.add_argument("-d", "--dataset", help="dataset name (see `gradleak list`); default photos")
    g.add_argument("--data-root", help="folder holding the dataset files (file-based datasets)")
    g.add_argument("--download", action="store_true", default=None, help="fetch the official archives first")
    g.add_argument("--split", choices=["train", "test"])
    g.add_argument("-i", "--index", dest="indices", type=int, nargs="+", help="image indices to attack")
    g.add_argument("-b", "--batch-size", type=int, help="number of images in the client's batch")
    g.add_argument("--image-size", type=int, help="resize images to this square size")
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", help="model name (see `gradleak list`) or your own FILE.py:FACTORY; default lenet")
    g.add_argument("--model-opt", dest="model_options", type=_kv, action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (e.g. width=16)")
    g.add_argument("-p", "--checkpoint", help="state_dict file loaded with torch.load(weights_only=True)")
    g.add_argument("--mode", choices=["eval", "train"], help="model mode of the client and the attacker")
    g = p.add_argument_group("client")
    g.add_argument("--protocol", choices=["fedsgd", "fedavg"])
    g.add_argument("--lr", type=float, help="client learning rate (fedavg)")
    g.add_argument("--epochs", type=int, help="local epochs (fedavg)")
    g.add_argument("--local-batch-size", type=int, help="local mini-batch size (fedavg; default full batch)")
    g = p.add_argument_group("defense")
    g.add_argument("--defense", dest="defenses", action="append", metavar="SPEC",
                   help="defense applied to the update, repeatable, in order (e.g. qsgd:bits=4, topk:keep=0.1; "
                        "see `gradleak list`)")
    g.add_argument("--knows-defense", action="store_true", default=None,
                   help="the attacker knows the defense mechanism (bayes models it)")
    g.add_argument("--knows-mask", action="store_true", default=None,
                   help="the attacker also knows the defense's random masks")
    g.add_argument("--dp-noise", dest="dp_noise_multiplier", type=float,
                   help="train the client with DP-SGD (Opacus) at this noise multiplier")
    g.add_argument("--dp-clip", dest="dp_max_grad_norm", type=float, help="DP-SGD per-sample clipping norm (1.0)")
    g.add_argument("--dp-delta", type=float, help="DP-SGD delta for the reported epsilon (1e-5)")
    g = p.add_argument_group("attack")
    g.add_argument("-a", "--attack", help="attack name (see `gradleak list`); default idlg")
    g.add_argument("--iterations", type=int, help="optimization steps per restart")
    g.add_argument("--restarts", type=int, help="independent random starts")
    g.add_argument("--attack-lr", type=float, help="the attack optimizer's learning rate")
    g.add_argument("--tv", type=float, help="total-variation weight (ig)")
    g.add_argument("--max-seconds", type=float, help="wall-clock budget of the attack")
    g.add_argument("--attack-opt", dest="attack_extra", type=_kv, action="append", metavar="KEY=VALUE",
                   help="any other attack option, repeatable")
    g.add_argument("--labels", choices=["auto", "given"], help="'given' hands the true labels to the attacker")
    g.add_argument("--knows-training", action="store_true", default=None,
                   help="attacker knows the local configuration and simulates the local steps")
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML file with any of these settings (flags override it)")
    g.add_argument("--seed", type=int, help="seed of the model, data draw and client (default 0)")
    g.add_argument("--attack-seed", type=int, help="seed of the attack's random start (default: --seed)")
    g.add_argument("-o", "--out", help="output folder (default runs/<time>-<attack>-<model>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    g.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: small models run fastest on one; raise for ResNets)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def config_keys() -> frozenset[str]:
    from gradleak.audit import config_keys as keys

    return frozenset(keys())


ATTACK_FLAGS = {"iterations": "iterations", "restarts": "restarts", "attack_lr": "lr", "tv": "tv",
                "max_seconds": "max_seconds"}


def _load_yaml(path: str) -> dict[str, Any]:
    from gradleak.io import read_yaml_mapping

    data = read_yaml_mapping(path, "--config file")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - config_keys())
    if unknown:
        raise GradleakError(f"--config file {path!r} has unknown keys {unknown}; allowed: {sorted(config_keys())}")
    return data


def build_config(args: argparse.Namespace):
    from gradleak.audit import AuditConfig

    settings: dict[str, Any] = _load_yaml(args.config) if args.config else {}
    for key in config_keys() - {"model_options", "attack_options"}:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    model_options = dict(settings.get("model_options") or {})
    model_options.update(dict(args.model_options or []))
    settings["model_options"] = model_options
    attack_options = dict(settings.get("attack_options") or {})
    for flag, option in ATTACK_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            attack_options[option] = value
    attack_options.update(dict(args.attack_extra or []))
    settings["attack_options"] = attack_options
    return AuditConfig.from_settings(settings)


def _default_out(config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.attack}-{config.model}"


def cmd_attack(args: argparse.Namespace) -> int:
    import torch

    from gradleak.audit import run_audit

    config = build_config(args)
    out = Path(args.out) if args.out else _default_out(config)
    if out.exists() and not args.overwrite:
        raise GradleakError(f"output folder {str(out)!r} exists; pass --overwrite to replace it")
    if args.threads is not None:
        if args.threads < 1:
            raise GradleakError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)

    from gradleak.cli_render import attack_progress, metrics_table

    with attack_progress(enabled=not args.quiet) as callback:
        run = run_audit(config, callback=callback)
    write_outputs(out, run, overwrite=args.overwrite)
    metrics_table(run, out)
    return 0 if run.result.status != "nonfinite" else 1


def write_outputs(out: Path, run, *, overwrite: bool) -> None:
    """Write the report into a temporary sibling folder, then move it into place."""
    import json

    import yaml

    from gradleak.io import write_folder
    from gradleak.report import save_grid

    def fill(tmp: Path) -> None:
        result = run.result
        (tmp / "metrics.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
        (tmp / "config.yaml").write_text(yaml.safe_dump(_plain(result.settings), sort_keys=True))
        title = (f"{result.settings['attack']} on {result.settings['model']}, {result.settings['protocol']}: "
                 f"PSNR {result.metrics.psnr_mean:.1f} dB, SSIM {result.metrics.ssim_mean:.3f}")
        save_grid(tmp / "reconstruction.png", run.original, run.reconstruction, psnr=list(result.metrics.psnr),
                  title=title)

    if out.exists() and not overwrite:  # checked before the attack too; the folder may have appeared since
        raise GradleakError(f"output folder {str(out)!r} exists; pass --overwrite to replace it")
    write_folder(out, fill)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def cmd_list(_args: argparse.Namespace) -> int:
    from gradleak.cli_render import registry_tables

    registry_tables()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradleak", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _attack_parser(sub).set_defaults(func=cmd_attack)
    sub.add_parser("list", help="registered attacks, models, datasets and metrics").set_defaults(func=cmd_list)
    add_analysis_parsers(sub)
    add_sweep_parsers(sub)
    add_report_parsers(sub)
    add_flower_parsers(sub)
    add_igsa_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except GradleakError as exc:
        print(f"gradleak: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("gradleak: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

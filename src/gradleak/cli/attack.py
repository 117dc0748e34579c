"""`gradleak attack`: simulate a client, attack its update, measure the leak, write the report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gradleak.cli.args import (
    add_device,
    add_seed,
    deprecated,
    kv,
    options,
    output_folder,
    set_threads,
    warn_deprecated,
)
from gradleak.errors import GradleakError

# flags that set one attack option each; --attack-opt sets any other
ATTACK_FLAGS = {"iterations": "iterations", "restarts": "restarts", "attack_lr": "lr", "tv": "tv",
                "max_seconds": "max_seconds"}


def add_parser(sub) -> None:
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
    g.add_argument("--model-opt", dest="model_options", type=kv, action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (e.g. width=16)")
    g.add_argument("-p", "--checkpoint", help="state_dict file loaded with torch.load(weights_only=True)")
    g.add_argument("--mode", dest="model_mode", choices=["eval", "train"],
                   help="model mode of the client and the attacker")
    g = p.add_argument_group("client")
    g.add_argument("--protocol", choices=["fedsgd", "fedavg"])
    g.add_argument("--lr", type=float, help="client learning rate (fedavg)")
    g.add_argument("--epochs", type=int, help="local epochs (fedavg)")
    g.add_argument("--local-batch-size", type=int, help="local mini-batch size (fedavg; default full batch)")
    g = p.add_argument_group("defense")
    g.add_argument("--defense", dest="defenses", action="append", metavar="SPEC",
                   help="defense, repeatable, in order (e.g. dpsgd:noise_multiplier=1, qsgd:bits=4, topk:keep=0.1; "
                        "a training defense, dpsgd or ats, first; see `gradleak list`)")
    g.add_argument("--knows-defense", action="store_true", default=None,
                   help="the attacker knows the defense mechanism (bayes models it)")
    g.add_argument("--knows-mask", action="store_true", default=None,
                   help="the attacker also knows the defense's random masks")
    g.add_argument("--dp-noise", type=float, help=deprecated("--dp-noise", "--defense dpsgd:noise_multiplier=X"))
    g.add_argument("--dp-clip", type=float, help=deprecated("--dp-clip", "--defense dpsgd:...,max_grad_norm=C"))
    g.add_argument("--dp-delta", type=float, help=deprecated("--dp-delta", "--defense dpsgd:...,delta=D"))
    g = p.add_argument_group("secure aggregation")
    g.add_argument("--clients", type=int,
                   help="N clients, each with its own --batch-size samples from its share of the data; the server "
                        "observes only their sum (needs --secure-aggregation; default 1)")
    g.add_argument("--secure-aggregation", action="store_true", default=None,
                   help="the server sees only the FedAvg-weighted sum of the clients' (defended) updates")
    g.add_argument("--partition", choices=["iid", "dirichlet"], help="how the data is split among the clients")
    g.add_argument("--dirichlet-alpha", type=float, help="label skew of --partition dirichlet (default 0.5)")
    g = p.add_argument_group("server")
    g.add_argument("--server", metavar="SPEC",
                   help="what the server sends: honest (default) or a malicious server such as imprint:bins=128 "
                        "(read out with -a imprint), trap:fire=0.02 (-a trap); see `gradleak list`")
    g = p.add_argument_group("attack")
    g.add_argument("-a", "--attack", help="attack name (see `gradleak list`); default idlg")
    g.add_argument("--iterations", type=int, help="optimization steps per restart")
    g.add_argument("--restarts", type=int, help="independent random starts")
    g.add_argument("--attack-lr", type=float, help="the attack optimizer's learning rate")
    g.add_argument("--tv", type=float, help="total-variation weight (ig)")
    g.add_argument("--max-seconds", type=float, help="wall-clock budget of the attack")
    g.add_argument("--attack-opt", dest="attack_extra", type=kv, action="append", metavar="KEY=VALUE",
                   help="any other attack option, repeatable")
    g.add_argument("--labels", choices=["auto", "given"], help="'given' hands the true labels to the attacker")
    g.add_argument("--knows-training", action="store_true", default=None,
                   help="attacker knows the local configuration and simulates the local steps")
    g = p.add_argument_group("measure")
    g.add_argument("--metric", dest="metrics", action="append", metavar="NAME",
                   help="image metric per sample, repeatable (default psnr, ssim, mse; see `gradleak list`)")
    g.add_argument("--matching", help="metric that matches reconstructions to originals (default mse)")
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML file with any of these settings (flags override it)")
    add_seed(g, default=None)
    g.add_argument("--attack-seed", type=int, help="seed of the attack's random start (default: --seed)")
    g.add_argument("-o", "--out", help="output folder (default runs/<time>-<attack>-<model>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    g.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: small models run fastest on one; raise for ResNets)")
    add_device(g, default=None)
    g.add_argument("--tf32", action="store_true", default=None,
                   help="TF32 matrix products on GPUs that have them (faster; results differ from float32's)")
    g.add_argument("--cudnn-benchmark", action="store_true", default=None,
                   help="let cuDNN pick algorithms for the attack's fixed shapes (faster; not bitwise reproducible)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_attack)


def _load_yaml(path: str) -> dict[str, Any]:
    from gradleak.io import read_yaml_mapping
    from gradleak.pipelines.config import accepted_keys, config_keys

    data = read_yaml_mapping(path, "--config file")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(accepted_keys()))
    if unknown:
        raise GradleakError(f"--config file {path!r} has unknown keys {unknown}; allowed: {sorted(config_keys())}")
    return data


def build_config(args: argparse.Namespace):
    """The AuditConfig of the flags over the --config file (flags win)."""
    from gradleak.defenses.dpsgd import dp_spec
    from gradleak.pipelines.config import AuditConfig, config_keys

    settings: dict[str, Any] = _load_yaml(args.config) if args.config else {}
    for key in set(config_keys()) - {"model_options", "attack_options", "give_labels"}:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if args.labels is not None:
        settings.pop("labels", None)
        settings["give_labels"] = args.labels == "given"
    for key in ("model_options", "attack_options"):
        if settings.get(key) is not None and not isinstance(settings[key], dict):
            raise GradleakError(f"--config file {args.config!r}: {key} must be a mapping of option: value, "
                                f"got {settings[key]!r}")
    settings["model_options"] = {**(settings.get("model_options") or {}),
                                 **options(args.model_options, "--model-opt")}
    attack_options = dict(settings.get("attack_options") or {})
    for flag, option in ATTACK_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            attack_options[option] = value
    settings["attack_options"] = {**attack_options, **options(args.attack_extra, "--attack-opt")}
    if args.dp_noise is not None or args.dp_clip is not None or args.dp_delta is not None:
        warn_deprecated("--dp-noise/--dp-clip/--dp-delta", "--defense dpsgd:noise_multiplier=X,max_grad_norm=C")
        if args.dp_noise is None:
            raise GradleakError("--dp-clip and --dp-delta need --dp-noise (better: --defense dpsgd:...)")
        spec = dp_spec(args.dp_noise, 1.0 if args.dp_clip is None else args.dp_clip,
                       1e-5 if args.dp_delta is None else args.dp_delta)
        settings["defenses"] = [spec, *(settings.get("defenses") or [])]
    return AuditConfig.from_settings(settings)


def say_expected(server, samples: int) -> None:
    """Print, before the client trains, what the server's model expects to recover."""
    from gradleak.cli.render import console

    expected = server.expected(samples)
    if expected is None:
        console.print(f"server {server.spec}: no closed-form expectation")
    else:
        console.print(f"server {server.spec}: expects to recover {expected.expected:.1f} of {samples} samples "
                      f"({expected.fraction:.1%}); all {samples} with probability {expected.p_all:.2g}")


def cmd_attack(args: argparse.Namespace) -> int:
    from gradleak.cli.render import attack_progress, metrics_table
    from gradleak.pipelines.audit import run_audit
    from gradleak.pipelines.write import write_audit

    config = build_config(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = output_folder(args.out, Path("runs") / f"{stamp}-{config.attack}-{config.model}", overwrite=args.overwrite)
    set_threads(args.threads)
    on_server = None if config.server is None else (lambda server: say_expected(server, config.samples_behind()))
    with attack_progress(enabled=not args.quiet) as callback:
        run = run_audit(config, callback=callback, on_server=on_server)
    write_audit(out, run, overwrite=args.overwrite)
    metrics_table(run, out)
    return 0 if run.result.status != "nonfinite" else 1

"""`gradleak doctor`: what this machine can run, on one screen (paste it into a bug report)."""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata

OPTIONAL = (("flwr", "Flower audits and federations (pip install -e '.[flower]')"),
            ("ray", "sweeps on a Ray cluster (pip install -e '.[ray]')"),
            ("opacus", "the dpsgd training defense"),
            ("cma", "gradient-free latent search"),
            ("transformers", "text models (pip install -e '.[text]')"), ("tokenizers", "text tokenizers"),
            ("peft", "LoRA clients"), ("rouge-score", "text ROUGE metrics"))
WEIGHTS = (("lpips", "alex", "standard"), ("lpips-vgg", "vgg", "standard"),
           ("stlpips", "alex", "shift-tolerant"), ("stlpips-vgg", "vgg", "shift-tolerant"))


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="versions, devices, threads and optional extras of this machine",
                       description="What this machine can run: versions, devices with their memory, torch threads, "
                                   "and which optional extras and metric weights are installed.")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_doctor)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def facts() -> dict:
    import torch

    from gradleak.devices import describe
    from gradleak.errors import GradleakError
    from gradleak.io import package_version
    from gradleak.metrics.lpips.weights import locate

    weights = {}
    for name, net, variant in WEIGHTS:
        try:
            weights[name] = ", ".join(str(p) for p in locate(net, variant).paths)
        except GradleakError as exc:
            weights[name] = f"not found: {str(exc).splitlines()[0]}"
    return {
        "versions": {"gradleak": package_version(), "python": platform.python_version(), "torch": torch.__version__,
                     "cuda (torch build)": torch.version.cuda, "numpy": _version("numpy"),
                     "platform": platform.platform()},
        "devices": describe(),
        "torch_threads": torch.get_num_threads(),
        "extras": {name: _version(name) for name, _ in OPTIONAL},
        "metric_weights": weights,
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from gradleak.cli.render import out_console

    found = facts()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    table = Table(title="gradleak doctor", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for name, version in found["versions"].items():
        table.add_row(name, str(version or "-"))
    table.add_row("torch threads", str(found["torch_threads"]))
    for row in found["devices"]:
        memory = f", {row['memory_gib']} GiB, compute {row['capability']}" if "memory_gib" in row else ""
        table.add_row(f"device {row['device']}", f"{row['name']}{memory}")
    for name, purpose in OPTIONAL:
        version = found["extras"][name]
        table.add_row(name, escape(f"{version} ({purpose})") if version
                      else "[yellow]not installed[/] " + escape(f"({purpose})"))
    for name, paths in found["metric_weights"].items():
        table.add_row(f"metric {name}", escape(paths))
    out_console.print(table)
    return 0

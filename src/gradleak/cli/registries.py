"""`gradleak list`: every registered attack, defense, model, dataset and metric."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    sub.add_parser("list", help="registered attacks, defenses, models, datasets and metrics").set_defaults(
        func=cmd_list)


def cmd_list(_args: argparse.Namespace) -> int:
    from gradleak.cli.render import registry_tables

    registry_tables()
    return 0

"""Command line: `gradleak attack`, `list`, `rank`, `rgap`, `utility`, `sweep`, `report`, `flower`, `igsa`, `doctor`,
`text-attack`, `generator`.

One module per command, each with `add_parser(sub)`; parsing (flags and YAML) happens in
`gradleak.cli` and only there, the library receives typed configs. User mistakes print
one line and exit 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from gradleak.cli.attack import add_parser as attack
from gradleak.cli.doctor import add_parser as doctor
from gradleak.cli.flower import add_parser as flower
from gradleak.cli.generator import add_parser as generator
from gradleak.cli.igsa import add_parser as igsa
from gradleak.cli.rank import add_parser as rank
from gradleak.cli.registries import add_parser as registries
from gradleak.cli.report import add_parser as report
from gradleak.cli.rgap import add_parser as rgap
from gradleak.cli.sweep import add_parser as sweep
from gradleak.cli.text import add_parser as text_attack
from gradleak.cli.utility import add_parser as utility
from gradleak.errors import GradleakError

COMMANDS = (attack, registries, rank, rgap, utility, sweep, report, flower, igsa, doctor, text_attack,
            generator)  # in `gradleak --help` order

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradleak", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS:
        add_parser(sub)
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

"""The command line, one module per command (`gradleak --help` lists them)."""

from gradleak.cli.main import main

__all__ = ["main"]

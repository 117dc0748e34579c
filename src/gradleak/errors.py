"""Errors raised for user mistakes.

`GradleakError` marks bad input the user can fix (a wrong name, shape, path or value).
The CLI prints its message on one line and exits non-zero; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class GradleakError(ValueError):
    """Bad input: the message names the argument, the expectation and the value."""


class UnknownNameError(GradleakError, KeyError):
    """A name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(GradleakError, FileNotFoundError):
    """Dataset files are missing from the given root."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CorruptFileError(GradleakError):
    """A file exists but cannot be parsed in the expected format."""


def check(condition: bool, message: str) -> None:
    """Raise `GradleakError(message)` unless `condition` holds (asserts vanish under -O)."""
    if not condition:
        raise GradleakError(message)

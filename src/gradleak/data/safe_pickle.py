"""A restricted unpickler for dataset files (CIFAR's python format).

Pickle runs whatever callables a file names. This unpickler admits only the globals
that plain containers and numpy arrays need; any other (os.system, builtins.eval, ...)
raises CorruptFileError before it can be called.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

from gradleak.errors import CorruptFileError

ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),  # numpy < 2 and the original (python 2) CIFAR files
    ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by python 3 carry bytes
})


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # python-2 spelling, also written by python 3 at protocol < 3
            module = "builtins"
        if (module, name) not in ALLOWED:
            raise CorruptFileError(f"refused to unpickle global {module}.{name}: dataset files hold only arrays")
        if module.startswith("numpy.core."):
            try:  # numpy 2 keeps numpy.core only as a deprecated alias of numpy._core
                return super().find_class("numpy._core." + module[len("numpy.core."):], name)
            except ImportError:
                pass
        return super().find_class(module, name)


def safe_load(fh: BinaryIO, *, encoding: str = "bytes", source: str = "") -> Any:
    """Unpickle `fh` with the restricted unpickler; any failure is a CorruptFileError naming `source`."""
    try:
        return RestrictedUnpickler(fh, encoding=encoding).load()
    except CorruptFileError as exc:
        raise CorruptFileError(f"{source}: {exc}" if source else str(exc)) from None
    except Exception as exc:  # a damaged pickle can fail in many ways; all mean the same to the user
        raise CorruptFileError(f"{source or 'pickle'} is not a readable pickle: {exc}") from None


def safe_loads(data: bytes, *, encoding: str = "bytes", source: str = "") -> Any:
    return safe_load(io.BytesIO(data), encoding=encoding, source=source)

"""A restricted unpickler for dataset files (CIFAR's python format).

Only plain containers and numpy arrays may be built; any other global (os.system,
builtins.eval, ...) is refused before it can run.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

from gradleak.errors import CorruptFileError

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # how python-2 pickles carry byte strings
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise CorruptFileError(f"refused to unpickle global {module}.{name}: dataset files hold only arrays")
        return super().find_class(module, name)


def safe_load(fh: BinaryIO, *, encoding: str = "bytes", source: str = "") -> Any:
    try:
        return RestrictedUnpickler(fh, encoding=encoding).load()
    except CorruptFileError as exc:
        raise CorruptFileError(f"{source}: {exc}" if source else str(exc)) from None
    except Exception as exc:
        raise CorruptFileError(f"{source or 'pickle'} is not a readable pickle: {exc}") from None


def safe_loads(data: bytes, **kw: Any) -> Any:
    return safe_load(io.BytesIO(data), **kw)

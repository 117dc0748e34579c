"""Atomic file writes: readers see the old file or the complete new one, never a part.

Data goes to a temporary file in the target's directory (same file system, so the
rename is atomic), is flushed to disk, then `os.replace`d over the target. On any
failure the temporary file is removed and the target is left untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from gradleak.errors import GradleakError


def _umask() -> int:
    # reading the umask via os.umask() briefly changes it for every thread; Linux
    # exposes it read-only in /proc
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(directory: Path) -> None:
    # makes the rename itself durable; not possible on every platform
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    target = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GradleakError(f"data must be bytes, got {type(data).__name__}")
    directory = target.parent
    if not directory.is_dir():
        raise GradleakError(f"cannot write {str(target)!r}: folder {str(directory)!r} does not exist")
    if target.is_dir():
        raise GradleakError(f"cannot write {str(target)!r}: it is a folder")
    # mkstemp creates 0600; keep an existing file's mode, else what open() would give
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns the path."""
    if not isinstance(text, str):
        raise GradleakError(f"text must be a str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write `obj` as JSON (plus a final newline) to `path` atomically; returns the path.

    Serialization happens before any file is touched, so an unserializable object
    (TypeError from `json`) leaves nothing behind.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    return atomic_write_text(path, text + "\n")




# a YAML file's expanded size (aliases counted each time they are used): a few hundred bytes
# of nested aliases ("billion laughs") would otherwise expand to gigabytes
MAX_YAML_NODES = 100_000


def read_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[Any, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty one); `what` names
    the file in errors ("--config file", "sweep file"). Duplicate keys, non-UTF-8 text and
    alias bombs are refused, naming the file."""
    shown = repr(str(path))
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise GradleakError(f"{what} {shown} does not exist") from None
    except IsADirectoryError:
        raise GradleakError(f"{what} {shown} is a folder, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise GradleakError(f"{what} {shown} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise GradleakError(f"{what} {shown} cannot be read: {exc.strerror or exc}") from None
    try:
        node = yaml.compose(text, Loader=StrictLoader)
        if node is not None:
            _check_expanded_size(node, what, shown)
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise GradleakError(f"{what} {shown} is not valid YAML: {str(exc).splitlines()[0]}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise GradleakError(f"{what} {shown} must hold a mapping, got {type(data).__name__}")
    return data


def _check_expanded_size(root, what: str, shown: str) -> None:
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise GradleakError(f"{what} {shown} expands to more than {MAX_YAML_NODES:,} YAML nodes "
                                "(nested aliases?); refused")
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML itself keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def write_folder(out: str | os.PathLike[str], fill: Callable[[Path], None]) -> Path:
    """Let `fill` write into a temporary sibling of `out`, then move it into place.

    An existing `out` is replaced (the caller decides whether that is allowed); an error
    or interrupt inside `fill` leaves `out` as it was and no temporary folder behind.
    """
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(tmp)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _exists(path: Path, flag: str) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # an unreadable parent: PermissionError from stat
        raise GradleakError(f"{flag} {str(path)!r} cannot be checked: {exc.strerror or exc}") from None


def _nearest_folder(path: Path, flag: str) -> Path:
    """The nearest existing ancestor of `path`, which must be a writable folder."""
    parent = path.absolute().parent
    while not _exists(parent, flag):
        parent = parent.parent
    if not parent.is_dir():
        raise GradleakError(f"{flag} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GradleakError(f"{flag} {str(path)!r} cannot be written: folder {str(parent)!r} is not writable")
    return parent


def check_writable_folder(out: str | os.PathLike[str], *, overwrite: bool, flag: str = "output folder") -> Path:
    """Refuse, before any work, an output folder that `write_folder` could not put in place."""
    out = Path(out)
    if _exists(out, flag):
        if not overwrite:
            raise GradleakError(f"{flag} {str(out)!r} exists; pass --overwrite to replace it")
        if not out.is_dir():
            raise GradleakError(f"{flag} {str(out)!r} is a file, not a folder")
        here = Path.cwd().resolve()
        if out.resolve() == here or out.resolve() in here.parents:
            raise GradleakError(f"{flag} {str(out)!r} holds the current folder; it cannot be replaced")
    _nearest_folder(out, flag)
    return out


def check_writable_file(path: str | os.PathLike[str], flag: str = "output file", *, exists_ok: bool = True) -> Path:
    """Refuse, before any work, an output file whose folder is missing or read-only."""
    path = Path(path)
    if _exists(path, flag):
        if path.is_dir():
            raise GradleakError(f"{flag} {str(path)!r} is a folder, not a file")
        if not exists_ok:
            raise GradleakError(f"{flag} {str(path)!r} exists; choose another")
    parent = path.absolute().parent
    if not _exists(parent, flag) or not parent.is_dir():
        raise GradleakError(f"{flag} {str(path)!r} cannot be written: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GradleakError(f"{flag} {str(path)!r} cannot be written: folder {str(parent)!r} is not writable")
    return path


def plain_data(value: Any) -> Any:
    """Mappings and sequences as dicts (string keys) and lists, what YAML and JSON write plainly."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def package_version() -> str:
    """gradleak's installed version (pyproject.toml is its one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gradleak")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_writable_file",
           "check_writable_folder", "package_version", "plain_data", "read_yaml_mapping", "write_folder"]

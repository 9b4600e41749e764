"""Safe file output and input hashing.

Outputs are written atomically: to a temporary file in the destination folder, then
renamed over the target, so a crash never leaves a half-written file.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json(d / "m.json", {"a": 1})
>>> read_json(d / "m.json")
{'a': 1}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedimg.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "atomic_path",
    "write_json",
    "read_json",
    "write_bytes",
    "sha256_file",
    "ensure_not_input",
]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary name keeps ``target``'s suffixes (``.nii.gz`` etc.) so writers that
    choose a format from the extension still work. On an exception the temp file is removed
    and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give outputs the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON (NaN/Inf are written as null)."""
    text = json.dumps(_finite(obj), indent=indent, sort_keys=False, default=_default)
    write_bytes(target, (text + "\n").encode())


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, with an :class:`InputError` naming it if missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "does not exist; check the path") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"is not valid JSON ({exc}); regenerate or fix the file") from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def ensure_not_input(output: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> None:
    """Refuse an output path that is one of the inputs (never overwrite an input)."""
    out = Path(output).resolve()
    for inp in inputs:
        if Path(inp).resolve() == out:
            raise InputError(output, "is also an input; choose a different output path (inputs are never overwritten)")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return _finite(dataclasses.asdict(obj))
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")

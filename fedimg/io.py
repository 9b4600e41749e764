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
    "check_writable",
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


def check_writable(target: str | os.PathLike[str], *, folder: bool) -> Path:
    """Check, before any work, that ``target`` (a folder, or a file when ``folder`` is false) can be
    created and written: its nearest existing ancestor must be a writable folder. Creates nothing
    (a probe folder is made and removed at once).

    >>> import tempfile, pathlib
    >>> check_writable(pathlib.Path(tempfile.mkdtemp()) / "new" / "run", folder=True).name
    'run'
    """
    target = Path(target)
    if target.exists() and folder != target.is_dir():
        want = "a folder" if folder else "a file name"
        raise InputError(target, f"is {'a file' if folder else 'a folder'}; give {want} for the output")
    anc = target if folder else target.parent
    anc = anc.absolute()
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(target, f"cannot be created: {anc} is a file, not a folder; choose another output location")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedimg-probe-", dir=anc))
    except OSError as exc:
        raise InputError(target, f"cannot be written: {anc} is not writable ({exc.strerror or exc}); "
                                 "choose another output location") from None
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(target, "exists and is not writable; choose another output location")
    return target


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

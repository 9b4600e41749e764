"""fedimg.io: atomic outputs, JSON round trips, never overwriting an input, file hashes."""

from __future__ import annotations

import hashlib
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedimg.errors import InputError
from fedimg.io import atomic_path, ensure_not_input, read_json, sha256_file, write_bytes, write_json


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_target_appears_only_on_success(tmp_path):
    target = tmp_path / "out" / "scan.nii.gz"  # the folder is made too
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.endswith(".nii.gz"), "writers choose the format from the suffix"
        assert tmp != target
        tmp.write_bytes(b"volume")
        assert not target.exists()
    assert target.read_bytes() == b"volume"
    assert sorted(p.name for p in target.parent.iterdir()) == ["scan.nii.gz"]


def test_atomic_path_replaces_an_existing_target(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"


@pytest.mark.parametrize("existing", [None, b"keep me"])
def test_atomic_path_failure_leaves_target_and_no_temp(tmp_path, existing):
    target = tmp_path / "m.json"
    if existing is not None:
        target.write_bytes(existing)
    with pytest.raises(RuntimeError, match="writer crashed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == ([target] if existing is not None else [])
    if existing is not None:
        assert target.read_bytes() == existing


def test_atomic_path_failure_before_writing(tmp_path):
    """A writer that removed or never wrote its temp file still fails cleanly."""
    target = tmp_path / "x.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.unlink()
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_gives_the_usual_mode_not_0600(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~_umask()
    if not _umask() & 0o066:  # the usual umasks (022, 002) give group/other read
        assert mode != 0o600


def test_atomic_path_explicit_suffix(tmp_path):
    with atomic_path(tmp_path / "model.safetensors", suffix=".part") as tmp:
        assert tmp.name.endswith(".part")
        tmp.write_bytes(b"w")
    assert (tmp_path / "model.safetensors").read_bytes() == b"w"


def test_write_bytes(tmp_path):
    write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"


@dataclass(frozen=True, kw_only=True)
class _Cfg:
    lr: float
    roi: tuple[int, ...]


def test_json_round_trip(tmp_path):
    obj = {"name": "site-1", "n": 3, "dice": [0.5, 0.75], "nested": {"ok": True, "none": None}}
    write_json(tmp_path / "m.json", obj)
    assert read_json(tmp_path / "m.json") == obj
    assert (tmp_path / "m.json").read_text().endswith("}\n")


def test_json_non_finite_paths_arrays_dataclasses(tmp_path):
    obj = {"nan": math.nan, "inf": [math.inf, -math.inf, 1.0], "path": Path("/data/site-1"),
           "arr": np.array([1.5, np.nan], dtype=np.float32), "cfg": _Cfg(lr=0.1, roi=(8, 8)), 7: "int key"}
    write_json(tmp_path / "m.json", obj)
    assert read_json(tmp_path / "m.json") == {"nan": None, "inf": [None, None, 1.0], "path": "/data/site-1",
                                              "arr": [1.5, None], "cfg": {"lr": 0.1, "roi": [8, 8]}, "7": "int key"}


def test_write_json_refuses_unserialisable_and_leaves_nothing(tmp_path):
    with pytest.raises(TypeError, match="cannot serialise object"):
        write_json(tmp_path / "m.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_read_json_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(InputError, match="does not exist") as exc:
        read_json(missing)
    assert exc.value.path == str(missing) and str(exc.value).startswith(f"{missing}: ")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON") as exc:
        read_json(bad)
    assert exc.value.path == str(bad)


def test_ensure_not_input_refuses_an_input(tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    a.write_bytes(b"a")
    ensure_not_input(tmp_path / "out.nii.gz", a, b)  # fine
    ensure_not_input(tmp_path / "out.nii.gz")  # no inputs: fine
    with pytest.raises(InputError, match="is also an input") as exc:
        ensure_not_input(b, a, b)
    assert exc.value.path == str(b)
    other_spelling = tmp_path / "sub" / ".." / "a.nii.gz"
    with pytest.raises(InputError, match="inputs are never overwritten"):
        ensure_not_input(other_spelling, a)
    assert a.read_bytes() == b"a"


def test_ensure_not_input_follows_symlinks(tmp_path):
    a = tmp_path / "a.nii.gz"
    a.write_bytes(b"a")
    link = tmp_path / "link.nii.gz"
    link.symlink_to(a)
    with pytest.raises(InputError):
        ensure_not_input(link, a)


def test_sha256_file(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    data = os.urandom(10_000)
    p.write_bytes(data)
    assert sha256_file(p) == sha256_file(p, chunk=7) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()

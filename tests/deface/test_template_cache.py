"""The template cache (fedimg.deface.template_cache): a cold and a warm cache give the arrays the template files
give, bit for bit; a garbled entry is ignored and rewritten; an unwritable folder is skipped; the CLI's folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedimg.deface import template as tpl
from fedimg.deface import template_cache as tc
from fedimg.deface import register_np
from fedimg.deface.qc_plane import template_midplane
from fedimg.deface.resample_masks import cube_codes, make_codes


def _clear() -> None:
    for fn in (tpl._template_intensity, tpl._load_template, tpl._template_head_mask, template_midplane):
        fn.cache_clear()
    register_np._CACHE.clear()


def _products():
    t = tpl.load_template()
    mask, maff = tpl.template_head_mask(4.0)
    levels = {f"level{mm}{i}": a for mm in (4.0, 2.0)
              for i, a in enumerate(register_np.template_level_np(t.intensity, t.affine, mm))}
    centre, normal = template_midplane()
    return {**levels, "centre": centre, "normal": normal, "intensity": t.intensity, "affine": t.affine,
            "face": t.face, "brain": t.brain, "mask": mask, "maff": maff,
            "face_codes": cube_codes(t.face), "brain_codes": cube_codes(t.brain)}


@pytest.fixture
def with_cache(tmp_path):
    """The products read without a cache, then the cache folder set to ``tmp_path``; reset afterwards."""
    tc.set_cache_dir(None)
    _clear()
    ref = {k: np.array(v) for k, v in _products().items()}
    tc.set_cache_dir(tmp_path)
    _clear()
    try:
        yield ref, tmp_path
    finally:
        tc.set_cache_dir(None)
        _clear()


def _same(got: dict, ref: dict) -> None:
    for k, v in ref.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v), k
        assert got[k].dtype != np.float32 or got[k].flags.c_contiguous


def test_cold_then_warm_cache_gives_the_files_arrays(with_cache):
    ref, root = with_cache
    _same(_products(), ref)  # cold: built and written
    entry = tc.entry_dir()
    assert entry.parent == root and entry.name.startswith("template-")
    names = sorted(p.name for p in entry.iterdir())
    assert {"maps.face.npy", "codes.brain.npy", "level_2mm.level.npy", "midplane.normal.npy"} <= set(names)
    assert not [n for n in names if n.endswith(".tmp")]
    _clear()
    warm = _products()  # warm: mapped from the files
    _same(warm, ref)
    assert not warm["face"].flags.writeable and not warm["intensity"].flags.writeable
    assert np.array_equal(warm["face_codes"], make_codes(ref["face"]))


def test_other_images_levels_are_not_cached(with_cache):
    ref, _ = with_cache
    t = tpl.load_template()
    other = np.array(t.intensity)  # the same values in another array: made afresh, not read as the template's
    got = register_np.template_level_np(other, t.affine, 4.0)
    assert np.array_equal(got[0], ref["level4.00"]) and not list(tc.entry_dir().glob("level_*"))


def test_garbled_entry_is_ignored_recomputed_and_rewritten(with_cache, caplog):
    ref, _ = with_cache
    _products()
    face = tc.entry_dir() / "maps.face.npy"
    face.write_bytes(face.read_bytes()[:1000])  # truncated
    (tc.entry_dir() / "head_mask_4mm.mask.npy").write_bytes(b"not a numpy file")
    _clear()
    with caplog.at_level(logging.WARNING, logger="fedimg.deface.template_cache"):
        _same(_products(), ref)
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 2
    assert face.stat().st_size > 46_000_000  # rewritten whole
    _clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedimg.deface.template_cache"):
        _same(_products(), ref)
    assert not caplog.records


def test_wrong_shape_is_stale(with_cache):
    ref, _ = with_cache
    _products()
    np.save(tc.entry_dir() / "intensity.intensity.npy", np.zeros((4, 4, 4), np.float32))
    _clear()
    _same(_products(), ref)


def test_unwritable_folder_is_skipped(with_cache, caplog):
    ref, root = with_cache
    blocker = root / "file"
    blocker.write_text("a file, not a folder")
    tc.set_cache_dir(blocker)
    with caplog.at_level(logging.WARNING, logger="fedimg.deface.template_cache"):
        _same(_products(), ref)
    assert any("cannot write" in r.getMessage() for r in caplog.records)


def test_no_cache_reads_and_writes_nothing(tmp_path):
    tc.set_cache_dir(None)
    assert tc.entry_dir() is None
    assert tc.cached("x", lambda: {"a": np.ones(2)}, {"a": ((2,), "float64")})["a"].tolist() == [1.0, 1.0]
    assert not list(tmp_path.iterdir())


def test_key_follows_the_code(monkeypatch, tmp_path):
    """Another source file in fedimg/deface (another version of the code) names another entry."""
    tc.set_cache_dir(tmp_path)
    try:
        first = tc.entry_dir()
        tc._key.cache_clear()
        real_glob = Path.glob
        monkeypatch.setattr(Path, "glob", lambda self, pat: [*real_glob(self, pat), Path(tc.__file__).parent / "__init__.py"])
        assert tc.entry_dir() != first
    finally:
        tc._key.cache_clear()
        tc.set_cache_dir(None)


def test_cli_cache_folder():
    from fedimg.cli.deface import template_cache_dir

    assert template_cache_dir({"FEDIMG_CACHE_DIR": "/x/y"}) == Path("/x/y")
    for off in ("", "off", "OFF", "0", "none"):
        assert template_cache_dir({"FEDIMG_CACHE_DIR": off}) is None
    assert template_cache_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/fedimg")
    assert template_cache_dir({}) == Path("~").expanduser() / ".cache" / "fedimg"


def test_a_new_entry_removes_all_but_the_newest_other(tmp_path):
    import os

    for i, name in enumerate(("template-old1", "template-old2", "template-old3")):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    (tmp_path / "unrelated").mkdir()
    tc.set_cache_dir(tmp_path)
    try:
        tc.cached("x", lambda: {"a": np.arange(3)}, {"a": ((3,), "int64")})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["template-old3", "unrelated", tc.entry_dir().name])
        tc.cached("y", lambda: {"a": np.arange(3)}, {"a": ((3,), "int64")})  # the same entry: nothing removed
        assert (tmp_path / "template-old3").is_dir()
    finally:
        tc.set_cache_dir(None)



_RACE = """
import sys, time
import numpy as np
from fedimg.deface import template_cache as tc
tc.set_cache_dir(sys.argv[1])
start = float(sys.argv[2])
def build():
    time.sleep(max(0.0, start - time.time()))  # every process writes at the same moment
    return {"a": np.arange(N, dtype=np.float32) * 0.5, "b": np.eye(4)}
got = tc.cached("race", build, {"a": ((N,), "float32"), "b": ((4, 4), "float64")})
print(float(got["a"].sum()), float(got["b"].sum()))
"""
# a reader polling the entry's files while the writers write: each file it finds must read back whole
_READER = """
import sys, time
import numpy as np
from fedimg.deface import template_cache as tc
tc.set_cache_dir(sys.argv[1])
start = float(sys.argv[2])
want = np.arange(N, dtype=np.float32) * 0.5
seen = 0
while time.time() < start + 60.0 and (seen == 0 or time.time() < start + 4.0):
    entry = tc.entry_dir()
    path = entry / "race.a.npy"
    if path.is_file():
        a = tc._read(path, (N,), "float32")
        assert np.array_equal(a, want)
        seen += 1
print(seen)
"""
N = 8_000_000


def test_processes_filling_one_entry_at_once_all_get_whole_files(tmp_path):
    """Several ``fedimg deface`` processes started together on an empty cache (``xargs -P``) write the same
    entry at the same moment: each writes under its own temporary name and renames, so every process gets the
    arrays it built, a process polling the entry meanwhile only ever finds whole files, and no temporary file is
    left behind (a writer that wrote in place would show the poller a short file)."""
    import subprocess
    import sys
    import time

    start = time.time() + 2.0
    head = f"N = {N}\n"
    cmds = [head + _RACE] * 3 + [head + _READER]
    procs = [subprocess.Popen([sys.executable, "-c", c, str(tmp_path), str(start)], stdout=subprocess.PIPE, text=True)
             for c in cmds]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    want = np.arange(N, dtype=np.float32) * 0.5
    assert outs[:3] == [[str(float(want.sum())), "4.0"]] * 3
    assert int(outs[3][0]) > 0  # the poller read the finished file at least once
    tc.set_cache_dir(tmp_path)
    try:
        entry = tc.entry_dir()
        assert sorted(p.name for p in entry.iterdir()) == ["race.a.npy", "race.b.npy"]  # no temporary file left
        got = tc.cached("race", lambda: pytest.fail("the entry should be read, not rebuilt"),
                        {"a": ((N,), "float32"), "b": ((4, 4), "float64")})
        assert np.array_equal(got["a"], want) and not got["a"].flags.writeable
    finally:
        tc.set_cache_dir(None)

"""Every bad input to ``fedimg deface`` (clear error naming the file, exit 2, inputs untouched)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.cli import main


def _write(path: Path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("four_d", "4-D"),
        ("slice2d", "2-D slice"),
        ("flat3d", "2-D slice"),
        ("empty", "empty"),
        ("nan", "NaN"),
        ("corrupt", "corrupt"),
        ("truncated", "cannot be read"),
        ("not_image", "not NIfTI"),
        ("missing", "does not exist"),
    ],
)
def test_bad_inputs_clear_error_inputs_untouched(tmp_path, hashed, capsys, case, message):
    rng = np.random.default_rng(0)
    src = tmp_path / f"{case}.nii.gz"
    if case == "four_d":
        _write(src, rng.random((20, 20, 20, 3)).astype(np.float32))
    elif case == "slice2d":
        _write(src, rng.random((64, 64)).astype(np.float32))
    elif case == "flat3d":
        _write(src, rng.random((64, 64, 1)).astype(np.float32))
    elif case == "empty":
        _write(src, np.zeros((32, 32, 32), np.int16))
    elif case == "nan":
        d = rng.random((32, 32, 32)).astype(np.float32)
        d[3, 3, 3] = np.nan
        _write(src, d)
    elif case == "corrupt":
        src.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    elif case == "truncated":
        _write(src, rng.random((40, 40, 40)).astype(np.float32))
        src.write_bytes(gzip.decompress(src.read_bytes())[:5000])
        src = src.rename(tmp_path / "truncated.nii")
    elif case == "not_image":
        src = tmp_path / "notes.txt"
        src.write_text("hello")
    if case != "missing":
        checker = hashed(tmp_path)
    out = tmp_path / "out" / "x_defaced.nii.gz"
    rc = main(["deface", str(src), "-o", str(out), "--no-png"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and src.name in err, err
    assert not out.exists()
    if case != "missing":
        checker.assert_unchanged()


def test_output_equal_to_input_refused(head_2mm, hashed, capsys):
    checker = hashed(head_2mm)
    rc = main(["deface", str(head_2mm), "-o", str(head_2mm)])
    assert rc == 2
    assert "is also an input" in capsys.readouterr().err
    checker.assert_unchanged()


def test_apply_to_output_equal_to_input_refused(head_2mm, tmp_path, capsys):
    other = tmp_path / "flair.nii.gz"
    other.write_bytes(head_2mm.read_bytes())
    rc = main(["deface", str(head_2mm), "-o", str(tmp_path / "t1d.nii.gz"), "--apply-to", str(other),
               "--apply-to-output", str(other)])
    assert rc == 2 and "is also an input" in capsys.readouterr().err


def test_apply_to_grid_mismatch_refused(head_2mm, tmp_path, capsys):
    other = _write(tmp_path / "small.nii.gz", np.ones((20, 20, 20), np.int16) * np.arange(20, dtype=np.int16))
    rc = main(["deface", str(head_2mm), "-o", str(tmp_path / "d.nii.gz"), "--apply-to", str(other)])
    assert rc == 2 and "reference grid" in capsys.readouterr().err
    assert not (tmp_path / "d.nii.gz").exists()

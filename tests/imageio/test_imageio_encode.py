"""``encode_like``: the bytes ``save_like`` writes to a ``.nii.gz`` (so the deface pipeline can gzip beside its QC)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.errors import InputError
from fedimg.imageio.volume import encode_like, load_volume, save_like

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
DESCRIP = b"fedimg-defaced 0.1.0"


@pytest.mark.parametrize("source", ["scaled", "real"])
def test_encode_like_is_the_file_save_like_writes(tmp_path, scaled_nifti, source):
    src = scaled_nifti[0] if source == "scaled" else MRI / "pycortex_S1_T1w_2mm.nii.gz"
    vol = load_volume(src)
    raw = vol.raw.copy()
    raw[: raw.shape[0] // 3] = 0  # a removal
    encoded = encode_like(vol, raw, tmp_path / "a.nii.gz", descrip=DESCRIP)
    written = save_like(vol, raw, tmp_path / "b.nii.gz", descrip=DESCRIP).read_bytes()
    assert encoded == written
    given = save_like(vol, raw, tmp_path / "c.nii.gz", descrip=DESCRIP, encoded=encoded).read_bytes()
    assert given == written
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "c.nii.gz")).dataobj.get_unscaled()), raw)


def test_encode_like_writes_nothing_and_leaves_other_targets_to_save_like(tmp_path, scaled_nifti):
    vol = load_volume(scaled_nifti[0])
    assert encode_like(vol, vol.raw, tmp_path / "plain.nii", descrip=DESCRIP) is None
    assert not (tmp_path / "plain.nii").exists()
    assert encode_like(vol, vol.raw, tmp_path / "none.nii.gz", descrip=DESCRIP) is not None
    assert not (tmp_path / "none.nii.gz").exists()
    out = save_like(vol, vol.raw, tmp_path / "plain.nii", descrip=DESCRIP)
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj.get_unscaled()), vol.raw)


def test_encode_like_raises_as_save_like(tmp_path, scaled_nifti):
    vol = load_volume(scaled_nifti[0])
    for fn in (encode_like, save_like):
        with pytest.raises(InputError, match="NRRD output needs an NRRD input"):
            fn(vol, vol.raw, tmp_path / "x.nrrd", descrip=DESCRIP)
        with pytest.raises(InputError, match="must end in"):
            fn(vol, vol.raw, tmp_path / "x.mha", descrip=DESCRIP)
        with pytest.raises(ValueError, match="output shape"):
            fn(vol, vol.raw[:-1], tmp_path / "x.nii.gz", descrip=DESCRIP)

"""Defacing real scans: the ds000031 head (as is and with a rotated header) and the brain1 tumour scan."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.cli import main
from fedimg.deface.core import DefaceConfig, face_removal
from fedimg.imageio.nrrd import read_nrrd
from fedimg.deface.register import _rotation
from fedimg.imageio.volume import to_canonical
from fedimg.imageio.provenance import is_defaced, sidecar_path

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
HEAD = MRI / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("head") / "sub-01_T1w_defaced.nii.gz"
    before = HEAD.read_bytes()
    rc = main(["deface", str(HEAD), "-o", str(out), "--qc-png", "always"])
    assert HEAD.read_bytes() == before, "input modified"
    return rc, out


@pytest.mark.slow
def test_real_head_defaced_with_qc_and_provenance(head_run):
    rc, out = head_run
    assert rc == 0
    src, dst = nib.load(str(HEAD)), nib.load(str(out))
    assert dst.shape == src.shape and dst.get_data_dtype() == src.get_data_dtype()
    assert np.allclose(dst.affine, src.affine) and nib.aff2axcodes(dst.affine) == ("L", "A", "S")
    a, b = np.asarray(src.dataobj), np.asarray(dst.dataobj)
    changed = a != b
    assert np.all(b[changed] == 0)
    qc = json.loads(out.with_name("sub-01_T1w_defaced.qc.json").read_text())
    assert qc["passed"] and qc["protected_changed_ml"] == 0.0
    assert 400 < qc["removed_ml"] < 2000 and qc["mutual_information"] > 0.4
    # the starts are distinct coarse alignments: a runner-up may end elsewhere, but then with a clearly worse loss
    assert qc["start_agreement_dice"] >= 0.8 or qc["loss_gap"] > 0.02
    assert out.with_name("sub-01_T1w_defaced.qc.png").stat().st_size > 10_000
    side = json.loads(sidecar_path(out).read_text())
    assert side["defaced"] is True and side["tool"] == "fedimg" and side["qc"]["passed"]
    assert is_defaced(out) and not is_defaced(HEAD)
    # the face is gone: in the lower half of the head, the front 25 mm of tissue is removed
    can_a, aff = to_canonical(a, src.affine)
    can_b, _ = to_canonical(b, src.affine)
    fg = can_a > 0.15 * np.percentile(can_a[can_a > 0], 99)
    ys = np.nonzero(fg.any(axis=(0, 2)))[0]
    zs = np.nonzero(fg.any(axis=(0, 1)))[0]
    front = int(round(25.0 / abs(aff[1, 1])))
    z_mid = (zs.min() + zs.max()) // 2
    slab = fg[:, ys.max() - front :, zs.min() + 20 : z_mid]
    kept = (can_b[:, ys.max() - front :, zs.min() + 20 : z_mid] != 0) & slab
    assert kept.sum() / slab.sum() < 0.2, f"{kept.sum() / slab.sum():.2f} of the face slab kept"
    # and the brain is kept: nothing changed in the back 60 % of the head nor in its top 60 mm
    y_back = ys.min() + int(0.6 * (ys.max() - ys.min()))
    assert not np.any(can_a[:, :y_back] != can_b[:, :y_back])
    z_top = zs.max() - int(round(60.0 / abs(aff[2, 2])))
    assert not np.any(can_a[:, :, z_top:] != can_b[:, :, z_top:])


@pytest.mark.slow
def test_real_head_with_rotated_header_removes_same_voxels(head_run):
    """Voxels unchanged, header rotated 30 degrees (pitch) about the head: same voxels removed."""
    _, out = head_run
    src = nib.load(str(HEAD))
    data = np.asarray(src.dataobj).astype(np.float32)
    ref_removed = np.asarray(nib.load(str(out)).dataobj) != np.asarray(src.dataobj)
    centre = src.affine @ np.array([(s - 1) / 2 for s in src.shape] + [1.0])
    rot = np.eye(4)
    rot[:3, :3] = _rotation(30.0, 0.0, 10.0)
    rot[:3, 3] = centre[:3] - rot[:3, :3] @ centre[:3]
    removal = face_removal(data, rot @ src.affine, config=DefaceConfig(preset="default"))
    rotated_removed = removal.remove & (data != 0)
    d = dice(ref_removed, rotated_removed)
    assert d >= 0.95, f"Dice {d:.3f}"
    assert removal.metrics["brain_in_head"] > 0.85


@pytest.mark.parametrize("with_label", [False, True])
def test_tumour_scan_keeps_every_tumour_voxel(tmp_path, with_label):
    image, label = MRI / "brain1_image.nrrd", MRI / "brain1_label.nrrd"
    out = tmp_path / "brain1_defaced.nii.gz"
    args = ["deface", str(image), "-o", str(out), "--fast", "--no-png"]
    if with_label:
        args += ["--protect", str(label)]
    assert main(args) == 0
    src, _, _ = read_nrrd(image)
    lab, _, _ = read_nrrd(label)
    res = np.asarray(nib.load(str(out)).dataobj)
    assert res.shape == src.shape and res.dtype == src.dtype
    tumour = lab > 0
    assert np.array_equal(res[tumour], src[tumour])
    assert (res != src).sum() > 10_000  # the face was removed
    qc = json.loads((tmp_path / "brain1_defaced.qc.json").read_text())
    assert qc["passed"] and qc["protected_changed_ml"] == 0.0
    if with_label:
        assert qc["user_protected_ml"] > 4137 * 0.78 * 0.78 * 6.5 / 1000


@pytest.mark.parametrize("png", ["default", "--no-png"])
def test_non_head_fails_qc_and_writes_no_image(tmp_path, capsys, png):
    """A volume that is not a head: QC fails (exit 3), only the QC report (and by default its picture) is written."""
    rng = np.random.default_rng(0)
    noise = (rng.random((64, 64, 64)) * 100).astype(np.int16)
    src = tmp_path / "noise.nii.gz"
    nib.save(nib.Nifti1Image(noise, np.diag([3.0, 3.0, 3.0, 1.0])), str(src))
    out = tmp_path / "out" / "noise_defaced.nii.gz"
    rc = main(["deface", str(src), "-o", str(out)] + ([] if png == "default" else [png]))
    assert rc == 3
    err = capsys.readouterr().err
    assert "QC failed" in err
    assert not out.exists() and not sidecar_path(out).exists()
    qc = json.loads((tmp_path / "out" / "noise_defaced.qc.json").read_text())
    assert qc["passed"] is False and qc["failures"]
    picture = tmp_path / "out" / "noise_defaced.qc.png"
    if png == "default":  # --qc-png fail: a failed file gets its picture, named in the error
        assert picture.stat().st_size > 10_000 and qc["qc_png"] == str(picture) and picture.name in err
    else:
        assert not picture.exists() and "qc_png" not in qc

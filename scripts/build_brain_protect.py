#!/usr/bin/env python
"""Build ``fedimg/assets/brain_protect.nii.gz``: the brain-protection mask of the pydeface template.

The defacer never removes a voxel inside this mask (warped into the subject), whatever the
face mask says. It is built once, reproducibly, from the template alone:

1. smooth the template (Gaussian, sigma 1 mm) and threshold it at 130 (grey/white matter of
   this template lie at 180-400, CSF and bone below ~100);
2. erode by a 6 mm ball to cut the brain from scalp and muscle, keep the largest connected
   component, dilate back by 6 mm and fill holes;
3. keep only what lies above a plane through the skull base (through y=60, z=35 and y=200,
   z=88 template voxels, i.e. below the cerebellum and the orbitofrontal cortex): this drops
   the tongue, pharynx and neck that stay connected through the brainstem;
4. dilate by a 3 mm safety margin.

Run: ``python scripts/build_brain_protect.py`` (about 30 s). It prints the mask volume and its
overlap with pydeface's face region; the output is byte-for-byte reproducible.
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

from fedimg.deface.template import BRAIN_PROTECT_NAME, FACEMASK_NAME, TEMPLATE_NAME
from fedimg.imageio.nifti import open_nifti
from fedimg.io import write_bytes

ASSETS = Path(__file__).resolve().parent.parent / "fedimg" / "assets"


def ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
    return (zz**2 + yy**2 + xx**2) <= radius**2


def build(template: np.ndarray) -> np.ndarray:
    smooth = ndi.gaussian_filter(template.astype(np.float32), 1.0)
    mask = ndi.binary_erosion(smooth > 130, ball(6))
    labels, n = ndi.label(mask)
    sizes = ndi.sum(mask, labels, range(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndi.binary_fill_holes(ndi.binary_dilation(mask, ball(6)))
    _, y, z = np.indices(template.shape)
    skull_base = 35.0 + (y - 60.0) * (88.0 - 35.0) / (200.0 - 60.0)
    mask &= z >= skull_base
    labels, n = ndi.label(mask)
    sizes = ndi.sum(mask, labels, range(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return ndi.binary_dilation(mask, ball(3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ASSETS / BRAIN_PROTECT_NAME)
    args = parser.parse_args(argv)
    img = open_nifti(ASSETS / TEMPLATE_NAME)
    face = np.asarray(open_nifti(ASSETS / FACEMASK_NAME).dataobj) < 0.5
    mask = build(np.asarray(img.dataobj))
    out = nib.Nifti1Image(mask.astype(np.uint8), img.affine, header=img.header.copy())
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["descrip"] = b"fedimg brain-protection mask (scripts/build_brain_protect.py)"
    raw = io.BytesIO()
    out.to_file_map({"image": nib.FileHolder(fileobj=raw), "header": nib.FileHolder(fileobj=raw)})
    # mtime=0 keeps the gzip bytes reproducible.
    write_bytes(args.output, gzip.compress(raw.getvalue(), compresslevel=9, mtime=0))
    vox_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
    sys.stdout.write(
        f"wrote {args.output}: {mask.sum() * vox_ml:.0f} mL protected, "
        f"overlap with the face region {(mask & face).sum() * vox_ml:.1f} mL of {face.sum() * vox_ml:.0f} mL\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

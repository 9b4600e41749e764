#!/usr/bin/env python
"""volpack's base registration for the defacing corpus (``deface_corpus.BASES["volpack"]``), and its check PNGs.

volpack (``volpack_brainsmall_T1.nii.gz``, 128x128x84, 2 mm assumed) has the top and back of its scalp and skull
cut away: its brain surface lies in air. The SimpleITK peer's plain MI affine (``deface.sitk_register``, rotation
search) matched the template's scalp to that bare brain and put the face region below the head. Here the same
SimpleITK method (Mattes MI, 12-DOF affine, regular-step gradient descent, physical-shift scales) runs with a
**fixed-image mask**: volpack's head dilated 4 mm, so the template's scalp may hang in the air where volpack's was
cut without being counted. Start: a similarity fitted to seven landmarks read off both images by eye (``--start
landmarks``, the default) or SimpleITK's moments start (``--start moments``, a check that the landmarks do not
decide the answer). Pyramid shrink 4, 2, 1 (smoothing 2, 1, 0 mm), 20 % random sampling, 300 iterations, one thread.

    python benchmarks/deface_corpus_volpack.py --json /tmp/volpack_base.json --png-dir /tmp/volpack_png

No fedimg registration is used (fedimg is what the corpus grades); fedimg provides only the template files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.deface_corpus_volpack")

IMAGE = Path("/work/shared/data/mri/volpack_brainsmall_T1.nii.gz")
#: voxel (x, y, z) of the canonical (RAS) arrays, volpack | template (mean_reg2mean), read off slices by eye (the
#: template is a blurred average: a few voxels; the chin's least sure). Only the start: a moments start ends the same
LANDMARKS = {
    "eye_centre_a": ((26, 81, 62), (57, 195, 95)), "eye_centre_b": ((59, 81, 62), (120, 195, 95)),
    "nose_tip": ((42, 105, 52), (88, 242, 58)), "nasion": ((42, 91, 65), (88, 218, 97)),
    "cc_genu": ((42, 72, 75), (88, 166, 130)), "cc_splenium": ((42, 38, 72), (88, 96, 128)),
    "chin": ((42, 96, 30), (88, 225, 18)),
}
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def landmark_worlds() -> tuple[np.ndarray, np.ndarray]:
    """(volpack world points, template world points), mm RAS, one row per landmark."""
    from _corpus import _canonical_head

    from fedimg.deface.template import load_template

    _, va = _canonical_head(IMAGE)
    ta = load_template().affine
    p = np.array([va[:3, :3] @ v + va[:3, 3] for v, _ in LANDMARKS.values()])
    q = np.array([ta[:3, :3] @ t + ta[:3, 3] for _, t in LANDMARKS.values()])
    return p, q


def similarity(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) taking points ``p`` to ``q``, as a 4x4 matrix."""
    mp, mq = p.mean(0), q.mean(0)
    u, s, vt = np.linalg.svd((q - mq).T @ (p - mp) / len(p))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / ((p - mp) ** 2).sum(1).mean()
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = scale * rot, mq - scale * rot @ mp
    return m


def head_mask_image(fixed, dilate_mm: float = 4.0):
    """volpack's head (above 10 % of its 99th percentile, largest component, closed, holes filled), dilated."""
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    arr = sitk.GetArrayFromImage(fixed)
    lab, _ = ndi.label(arr > 0.1 * np.percentile(arr[arr > 0], 99))
    head = ndi.binary_fill_holes(ndi.binary_closing(lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1, iterations=2))
    steps = int(round(dilate_mm / min(fixed.GetSpacing())))
    mask = ndi.binary_dilation(head, structure=ndi.generate_binary_structure(3, 1), iterations=steps)
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(fixed)
    return out


def register(start: str = "landmarks", seed: int = 0, dilate_mm: float = 4.0) -> dict:
    """volpack subject world -> template world (RAS 4x4) by masked SimpleITK MI, with its settings and metric."""
    import SimpleITK as sitk

    import deface as peer

    fixed, moving, _, _ = peer._sitk_images(IMAGE, 1)
    mask = head_mask_image(fixed, dilate_mm)
    if start == "landmarks":
        m0 = _LPS @ similarity(*landmark_worlds()) @ _LPS  # ITK works in LPS
        init = sitk.AffineTransform(3)
        init.SetMatrix(m0[:3, :3].ravel().tolist())
        init.SetTranslation(m0[:3, 3].tolist())
    else:
        init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = peer._sitk_method(seed, [4, 2, 1], [2.0, 1.0, 0.0], iterations=300)
    reg.SetMetricSamplingPercentage(0.2, seed)
    reg.SetMetricFixedMask(mask)
    reg.SetInitialTransform(init, inPlace=False)
    transform = reg.Execute(fixed, moving)
    m = peer.sitk_matrix_ras(transform)
    return {"subject_to_template": m.tolist(), "sitk_metric": float(reg.GetMetricValue()), "start": start, "seed": seed,
            "mask_dilation_mm": dilate_mm, "sitk_version": sitk.Version_VersionString(),
            "stop": reg.GetOptimizerStopConditionDescription()}


def render(base: np.ndarray, out_dir: Path, tag: str) -> list[Path]:
    """One PNG per view (two slices each): reference face (red), brain protection (yellow), template head (cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _corpus import _canonical_head, _sample

    from fedimg.deface.template import load_template

    d, a = _canonical_head(IMAGE)
    t = load_template()
    p = np.argwhere(np.ones(d.shape, bool)) @ a[:3, :3].T + a[:3, 3]
    maps = np.stack([t.face, t.brain, t.intensity / np.percentile(t.intensity, 99)])
    face, brain, inten = _sample(maps, t.affine, p @ base[:3, :3].T + base[:3, 3]).reshape(3, *d.shape)
    ref = (face > 0.5) & ~(brain > 0.01)
    views = {"sagittal": [("x=42 (midline)", lambda v: v[42].T), ("x=27 (an eye)", lambda v: v[27].T)],
             "axial": [("z=54 (nose, orbit floor)", lambda v: v[:, :, 54].T), ("z=62 (orbits)", lambda v: v[:, :, 62].T)],
             "coronal": [("y=92 (nose, lips)", lambda v: v[:, 92, :].T), ("y=80 (orbits, maxilla)", lambda v: v[:, 80, :].T)]}
    paths = []
    for view, panels in views.items():
        fig, ax = plt.subplots(1, 2, figsize=(8, 4.4))
        for j, (name, f) in enumerate(panels):
            ax[j].imshow(f(d), origin="lower", cmap="gray", vmax=np.percentile(d[d > 0], 99), interpolation="nearest")
            ax[j].imshow(np.ma.masked_where(~f(ref), f(ref).astype(float)), origin="lower", cmap="Reds", alpha=0.45,
                         vmin=0, vmax=1.2)
            ax[j].contour(f(brain), levels=[0.5], colors="yellow", linewidths=0.7)
            ax[j].contour(f(inten), levels=[0.15], colors="cyan", linewidths=0.6)
            ax[j].set_title(f"{view} {name}", fontsize=8)
            ax[j].tick_params(labelsize=6)
        fig.suptitle(f"volpack ({tag}): reference face (red), brain protection (yellow), template head edge (cyan); "
                     "array right = R (+x), up = A or S", fontsize=7)
        plt.tight_layout()
        paths.append(out_dir / f"deface-corpus-volpack-base-{view}-{tag}.png")
        plt.savefig(paths[-1], dpi=60)
        plt.close(fig)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="volpack's masked SimpleITK base registration and its check PNGs")
    p.add_argument("--start", choices=["landmarks", "moments"], default="landmarks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dilate-mm", type=float, default=4.0, help="fixed-mask dilation of volpack's head (mm)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--png-dir", type=Path, default=None, help="render the three views of the base found here")
    p.add_argument("--tag", default="base")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    res = register(args.start, args.seed, args.dilate_mm)
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.png_dir:
        args.png_dir.mkdir(parents=True, exist_ok=True)
        for path in render(np.array(res["subject_to_template"]), args.png_dir, args.tag):
            log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

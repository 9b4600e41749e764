#!/usr/bin/env python
"""Where do the template's face landmarks land in a real head? Reference vs fedimg's placements.

Issue 11 (h11r): on ds000031 the head-outline placement (:mod:`fedimg.deface.qc_face`) and the
corpus reference (``deface_corpus.BASES``, a SimpleITK registration) disagree by 12-25 mm along
S-I. This probe judges them against the head's own anatomy, with no intensities: the subject's
head mask is pulled into the template frame through each placement, and the anterior face
profile on the mid-sagittal slab (the most anterior head row per axial level, within 6 mm of the
template's mid-plane) is compared with the template's own profile. Landmarks from that profile:
nose tip (most anterior point), nasion (deepest point of the profile above the nose tip), chin
(pogonion: most anterior point 35-80 mm below the nose tip). ``dz`` = subject landmark minus
template landmark height (template mm, +superior): 0 when the placement puts the subject's
anatomy where the template's is; negative: the subject's face lands low in the template, i.e. the
template's face region lands high (superior) in the subject.

Placements on the real head (its own grid, never warped): ``reference`` (BASES), ``mi`` (fedimg's
MI registration, :func:`fedimg.deface.core.face_removal`), ``outline`` (the head-outline
placement QC uses), and the outline on degraded copies of the same head (thick axial slabs,
chin crop), the corpus's archive conditions, to see which condition moves it.

    PYTHONPATH=. python benchmarks/deface_anatomy.py --head ds000031 --json out.json [--png out.png]

Dev heads only (ds000031, pycortex): the held-out head is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deface_corpus import BASES, DATA, DEV_HEADS, HEADS  # noqa: E402

log = logging.getLogger("benchmarks.deface_anatomy")
STEP = 2.0  # mm, the grid the profiles are read on
SLAB_MM = 6.0  # half-width of the mid-sagittal slab


def _template_grid():
    from fedimg.deface.coarse import head_mask
    from fedimg.deface.template import load_template

    t = load_template()
    mask, aff = head_mask(t.intensity, t.affine, step_mm=STEP)
    corners = np.array([[i, j, k] for i in (0, mask.shape[0]) for j in (0, mask.shape[1]) for k in (0, mask.shape[2])])
    world = corners @ aff[:3, :3].T + aff[:3, 3]
    lo, hi = world.min(0), world.max(0)
    gaff = np.diag([STEP, STEP, STEP, 1.0])  # an axis-aligned grid in template world (the template's own is tilted)
    gaff[:3, 3] = lo
    shape = tuple(int(n) for n in np.ceil((hi - lo) / STEP))
    return t, _pull(mask, aff, np.eye(4), shape, gaff), gaff


def _profile(mask: np.ndarray, aff: np.ndarray, mid_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Per axial row of ``mask`` (a RAS-aligned grid): z (mm) and the most anterior y (mm) within the slab; NaN if none."""
    x = aff[0, 0] * np.arange(mask.shape[0]) + aff[0, 3]
    y = aff[1, 1] * np.arange(mask.shape[1]) + aff[1, 3]
    z = aff[2, 2] * np.arange(mask.shape[2]) + aff[2, 3]
    slab = mask[np.abs(x - mid_x) <= SLAB_MM]
    front = np.full(len(z), np.nan)
    for k in range(len(z)):
        rows = np.nonzero(slab[:, :, k].any(0))[0]
        if rows.size:
            front[k] = y[rows.max()]
    return z, front


def _landmarks(z: np.ndarray, front: np.ndarray, z_lo: float, z_hi: float) -> dict:
    """Nose tip, nasion and chin heights (mm) on a profile, searched within the face rows [z_lo, z_hi]."""
    ok = (z >= z_lo) & (z <= z_hi) & np.isfinite(front)
    if ok.sum() < 5:
        return {}
    zi, fi = z[ok], front[ok]
    tip = int(np.argmax(fi))
    above = (zi > zi[tip]) & (zi <= zi[tip] + 45)
    below = (zi < zi[tip] - 35) & (zi >= zi[tip] - 80)
    out = {"nose_tip": float(zi[tip]), "nose_tip_y": float(fi[tip])}
    if above.any():
        out["nasion"] = float(zi[above][np.argmin(fi[above])])
    if below.any():
        out["chin"] = float(zi[below][np.argmax(fi[below])])
    return out


def _pull(mask: np.ndarray, aff: np.ndarray, subject_to_template: np.ndarray, shape, taff) -> np.ndarray:
    """Subject mask sampled (nearest) on the template grid through the placement."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3).astype(float)
    tw = idx @ taff[:3, :3].T + taff[:3, 3]
    inv = np.linalg.inv(subject_to_template)
    sw = tw @ inv[:3, :3].T + inv[:3, 3]
    v = np.rint((sw - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T).astype(int)
    ok = np.all((v >= 0) & (v < np.array(mask.shape)), axis=1)
    out = np.zeros(len(v), bool)
    out[ok] = mask[tuple(v[ok].T)]
    return out.reshape(shape)


def measure(head: str, degrade: bool = True, png: Path | None = None) -> dict:
    from fedimg.deface.coarse import head_mask
    from fedimg.deface.qc import _candidates
    from fedimg.deface.qc_face import shape_placement
    from fedimg.deface.qc_plane import template_midplane
    from fedimg.imageio.volume import to_canonical
    import nibabel as nib

    if head not in DEV_HEADS:
        raise SystemExit(f"{head}: not a development head ({', '.join(DEV_HEADS)}); the held-out head is never probed")
    img = nib.load(str(DATA / HEADS[head]))
    can, aff = to_canonical(np.asarray(img.get_fdata(dtype=np.float32)), img.affine.astype(np.float64))
    aff = np.round(aff, 4)
    t, tmask, taff = _template_grid()
    mid_x = float(template_midplane()[0][0])
    face_vox = np.argwhere(t.face > 0.5)
    fz = face_vox @ t.affine[:3, :3].T + t.affine[:3, 3]
    z_lo, z_hi = float(fz[:, 2].min()), float(fz[:, 2].max())
    z, f_t = _profile(tmask, taff, mid_x)
    rec = {"head": head, "template": {"face_mask_z_mm": [z_lo, z_hi], **_landmarks(z, f_t, z_lo, z_hi + 30)},
           "placements": {}}
    poses = {"reference": np.array(BASES[head])}
    from fedimg.deface.core import face_removal

    t0, c0 = time.perf_counter(), time.process_time()
    poses["mi"] = face_removal(can, aff, canonical=(can, aff)).registration.subject_to_template
    rec["mi_seconds"] = [time.perf_counter() - t0, time.process_time() - c0]
    variants = {"outline": can}
    if degrade:
        k = max(1, int(round(5.0 / abs(aff[2, 2]))))
        thick = can.copy()
        n = thick.shape[2] - thick.shape[2] % k
        thick[:, :, :n] = np.repeat(thick[:, :, :n].reshape(*thick.shape[:2], n // k, k).mean(-1), k, axis=2)
        variants["outline, 5 mm axial slabs"] = thick
        sub = np.argwhere(head_mask(can, aff, step_mm=4.0)[0])
        for cut in (20, 40):
            crop = can.copy()
            kz = int(round(cut / abs(aff[2, 2])))
            z0 = int(sub[:, 2].min() * round(4.0 / abs(aff[2, 2])))
            crop[:, :, : z0 + kz] = 0.0
            variants[f"outline, chin cut {cut} mm"] = crop
    for name, vol in variants.items():
        pl = shape_placement(vol, aff, _candidates(vol, aff))
        poses[name] = pl.pose
    smask, saff = head_mask(can, aff, step_mm=STEP)  # the anatomy: always the full, un-degraded head
    for name, pose in poses.items():
        pulled = _pull(smask, saff, pose, tmask.shape, taff)
        _, f_s = _profile(pulled, taff, mid_x)
        lm = _landmarks(z, f_s, z_lo - 40, z_hi + 30)
        dz = {k: lm[k] - rec["template"][k] for k in ("nose_tip", "nasion", "chin") if k in lm and k in rec["template"]}
        rec["placements"][name] = {"landmarks_mm": lm, "dz_mm": dz, "pose": np.round(pose, 5).tolist()}
        log.info("%s %s: dz %s", head, name, {k: round(v, 1) for k, v in dz.items()})
        rec["placements"][name]["profile"] = [None if not np.isfinite(v) else float(v) for v in f_s]
    rec["template"]["profile"] = [None if not np.isfinite(v) else float(v) for v in f_t]
    rec["profile_z_mm"] = z.tolist()
    if png is not None:
        _plot(rec, png)
    return rec


def _plot(rec: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.array(rec["profile_z_mm"])
    fig, ax = plt.subplots(figsize=(5, 6))
    ax.plot(np.array(rec["template"]["profile"], dtype=float), z, "k-", lw=2, label="template")
    for name, p in rec["placements"].items():
        ax.plot(np.array(p["profile"], dtype=float), z, lw=1,
                label=f"{name} (nose {p['dz_mm'].get('nose_tip', np.nan):+.0f} mm)")
    lo, hi = rec["template"]["face_mask_z_mm"]
    ax.axhspan(lo, hi, color="r", alpha=0.08, label="face mask rows")
    ax.set_xlabel("most anterior head point, y (template mm)")
    ax.set_ylabel("z (template mm, superior up)")
    ax.set_title(f"{rec['head']}: mid-sagittal face profile in the template frame")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", default="ds000031", choices=DEV_HEADS)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--no-degrade", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rec = measure(a.head, degrade=not a.no_degrade, png=a.png)
    a.json.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

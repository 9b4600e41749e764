#!/usr/bin/env python
"""Where the face a removal missed lies: distance from the removal, tissue or air, toward the brain or not.

Measurement only (issue 11). For each case of a corpus run (``deface_corpus.py run``) whose recall is
below ``--below``, the reference voxels (within the acquired field of view) that the removal did not
change are split by:

- their distance (mm) to the nearest removed voxel (a Euclidean distance map of the removal);
- tissue or air: the subject's intensity above or below the head threshold of
  :func:`fedimg.deface.coarse.head_mask` (10 % from background to the 99th percentile);
- whether they lie inside the removal's own protection (the warped brain-protection map > 0.01, plus
  the ``--protect`` tumour label dilated 2 mm): a removal margin that subtracts the protection can
  never take those.

It also reports what a margin of ``M`` mm (dilate the removal by ``M`` mm, subtract the protection)
would give on each case: recall, Dice, and reference-brain / tumour voxels removed.

    python benchmarks/deface_missed.py --out /tmp/h12a/s563 --run /tmp/h12a/s563-main.json --json /tmp/h12a/missed-s563.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.deface_missed")

__all__ = ["case_missed", "main"]

BINS_MM = (0.0, 2.0, 4.0, 6.0, 10.0, np.inf)
MARGINS_MM = (2.0, 3.0, 4.0, 6.0)


def _removal(image: Path, run_dir: Path):
    """(removed mask, protected mask, source array, affine) of one case of a corpus run."""
    import nibabel as nib
    from deface_corpus import removal_masks

    stem = image.name[: -len(".nii.gz")]
    img = nib.load(str(image))
    src = np.asarray(img.dataobj)
    aff = img.affine
    record = json.loads((run_dir / f"{stem}_defaced.qc.json").read_text())
    remove, protected = removal_masks(np.array(record["subject_to_template"]), src.shape, aff,
                                      image.with_name(f"{stem}_tumour.nii.gz"))
    out = run_dir / f"{stem}_defaced.nii.gz"
    if out.is_file():  # the written removal (passed cases) must be the one recomputed
        written = np.asarray(nib.load(str(out)).dataobj) != src
        diff = int((written ^ (remove & (src != 0))).sum())
        if diff:
            log.warning("%s: the written removal differs from the recomputed one in %d voxels", stem, diff)
        remove = written
    return remove, protected, src, aff


def case_missed(image: Path, run_dir: Path) -> dict:
    """The split of one case's missed reference voxels, and what each margin in :data:`MARGINS_MM` gives."""
    from scipy import ndimage as ndi

    from fedimg.deface.coarse import _levels
    from fedimg.deface.masks import dilate_mm

    stem = image.name[: -len(".nii.gz")]
    truth = np.load(image.with_name(f"{stem}_truth.npz"))
    remove, protected, src, aff = _removal(image, run_dir)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    fov = src != 0
    ref = truth["reference"] & fov
    missed = ref & ~remove
    n_ref, n_missed = int(ref.sum()), int(missed.sum())
    dist = ndi.distance_transform_edt(~remove, sampling=spacing) if remove.any() else np.full(src.shape, np.inf)
    d = dist[missed]
    lo, hi = _levels(src.astype(np.float32))
    tissue = src[missed] > lo + 0.1 * (hi - lo)
    prot = protected[missed]
    hist = {}
    for a, b in zip(BINS_MM[:-1], BINS_MM[1:]):
        sel = (d > a) & (d <= b)
        hist[f"{a:g}-{b:g}"] = {"share": float(sel.sum() / max(1, n_missed)),
                                "tissue": float((sel & tissue).sum() / max(1, n_missed)),
                                "protected": float((sel & prot).sum() / max(1, n_missed))}
    row = {"case": stem, "spacing": spacing.round(2).tolist(), "reference_voxels": n_ref,
           "recall": 1.0 - n_missed / max(1, n_ref), "missed_share_of_reference": n_missed / max(1, n_ref),
           "missed_tissue": float(tissue.mean()) if n_missed else 0.0,
           "missed_protected": float(prot.mean()) if n_missed else 0.0,
           "missed_distance_mm_median": float(np.median(d)) if n_missed else 0.0,
           "missed_distance_mm_p90": float(np.percentile(d, 90)) if n_missed else 0.0, "by_distance_mm": hist,
           "margins": {}}
    for m in MARGINS_MM:
        grown = (dilate_mm(remove, spacing, m) & ~protected) | remove
        g = grown & fov
        row["margins"][f"{m:g}"] = {
            "recall": float((g & ref).sum() / max(1, n_ref)),
            "dice": float(2 * (g & ref).sum() / max(1, g.sum() + ref.sum())),
            "brain_removed": int((g & truth["brain"]).sum()), "tumour_removed": int((g & truth["tumour"]).sum()),
            "grown_ml": float((g & ~remove).sum() * np.prod(spacing) / 1000.0)}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="where a removal's missed reference face lies (corpus runs)")
    p.add_argument("--out", type=Path, required=True, help="corpus folder (deface_corpus.py build --out)")
    p.add_argument("--run", type=Path, required=True, help="the run's JSON (deface_corpus.py run --json)")
    p.add_argument("--below", type=float, default=0.95, help="cases with recall below this (default 0.95)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run = json.loads(args.run.read_text())
    run_dir = args.out / f"defaced_{args.run.stem}"
    rows = []
    for case in run["cases"]:
        if case.get("recall") is None or case["recall"] >= args.below:
            continue
        row = case_missed(args.out / "cases" / f"{case['case']}.nii.gz", run_dir)
        row.update(passed=case["passed"], correct=case.get("correct", case.get("would_be_correct")),
                   run_recall=case["recall"], brain_removed=case.get("brain_removed"))
        rows.append(row)
        log.info("%s", json.dumps({k: v for k, v in row.items() if k not in ("by_distance_mm", "margins")}))
    result = {"corpus": str(args.out), "run": str(args.run), "below": args.below, "cases": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

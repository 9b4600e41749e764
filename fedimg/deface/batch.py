"""Batch defacing: plan jobs over a BIDS tree or BraTS case folders, run them, summarise.

- ``bids``: every ``sub-*/[ses-*/]anat/*.nii[.gz]`` is defaced on its own registration; the
  tree is mirrored under the output root (top-level metadata files are copied).
- ``brats``: each case folder ``<case>/<case>_t1.nii.gz`` (+ ``_t1ce``, ``_t2``, ``_flair``,
  label ``_seg``; or the 2023 names ``-t1n/-t1c/-t2w/-t2f/-seg``) is one job: the t1 is
  registered, the other modalities get the same removal, the label is protected and copied
  (as are top-level metadata files such as ``site.json``).

A file that fails (bad input or QC) does not stop the batch; it is listed in the summary
(``deface_summary.json`` in the output root) and the batch returns a non-zero exit code.

>>> detect_layout(Path("/nonexistent"))
'unknown'
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedimg.errors import FedimgError, InputError
from fedimg.imageio.suffixes import NIFTI_SUFFIXES, is_nifti
from fedimg.io import write_bytes, write_json

from .pipeline import DefaceJob, deface_job

__all__ = ["LAYOUTS", "detect_layout", "plan_bids", "plan_brats", "plan", "run_batch", "BRATS_NAMES"]

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "bids", "brats")
BRATS_NAMES = {
    "brats2021": {"ref": "_t1", "others": ("_t1ce", "_t2", "_flair"), "seg": "_seg"},
    "brats2023": {"ref": "-t1n", "others": ("-t1c", "-t2w", "-t2f"), "seg": "-seg"},
}


def _find(folder: Path, name: str) -> Path | None:
    for ext in NIFTI_SUFFIXES:
        p = folder / f"{name}{ext}"
        if p.is_file():
            return p
    return None


def _brats_case(folder: Path):
    for names in BRATS_NAMES.values():
        ref = _find(folder, folder.name + names["ref"])
        if ref is not None:
            return names, ref
    return None


def detect_layout(root: Path) -> str:
    """``"bids"``, ``"brats"`` or ``"unknown"`` for a folder."""
    if not root.is_dir():
        return "unknown"
    if any(root.glob("sub-*")):
        return "bids"
    if _brats_case(root) or any(_brats_case(d) for d in root.iterdir() if d.is_dir()):
        return "brats"
    return "unknown"


def plan_bids(root: Path, out_root: Path) -> tuple[list[DefaceJob], list[tuple[Path, Path]]]:
    """Jobs for every anatomical image of a BIDS tree, and metadata files to copy."""
    images = sorted(p for p in root.glob("sub-*/**/anat/*") if p.is_file() and is_nifti(p))
    jobs = [DefaceJob(reference=p, output=out_root / p.relative_to(root)) for p in images]
    return jobs, _metadata(root, out_root)


def plan_brats(root: Path, out_root: Path) -> tuple[list[DefaceJob], list[tuple[Path, Path]]]:
    """One job per BraTS case folder (``root`` is a case folder or a folder of them)."""
    folders = [root] if _brats_case(root) else sorted(d for d in root.iterdir() if d.is_dir() and _brats_case(d))
    jobs = []
    for folder in folders:
        names, ref = _brats_case(folder)  # type: ignore[misc]
        dest = out_root if folder == root else out_root / folder.name
        apply_to, missing = [], []
        for suffix in names["others"]:
            p = _find(folder, folder.name + suffix)
            if p is None:
                missing.append(folder.name + suffix)
            else:
                apply_to.append((p, dest / p.name))
        if missing:
            log.warning("%s: no %s; defacing the modalities present", folder, ", ".join(missing))
        seg = _find(folder, folder.name + names["seg"])
        jobs.append(DefaceJob(
            reference=ref, output=dest / ref.name, apply_to=tuple(apply_to),
            protect=(seg,) if seg else (), copy=((seg, dest / seg.name),) if seg else (),
        ))
    return jobs, ([] if folders == [root] else _metadata(root, out_root))


def _metadata(root: Path, out_root: Path) -> list[tuple[Path, Path]]:
    """Top-level metadata files (dataset_description.json, participants.tsv, site.json, README...)."""
    keep = {".json", ".tsv", ".csv", ".md", ".txt"}
    return [(f, out_root / f.name) for f in sorted(root.iterdir())
            if f.is_file() and f.suffix.lower() in keep and f.name != "deface_summary.json"]


def plan(root: Path, out_root: Path, layout: str = "auto") -> tuple[list[DefaceJob], list[tuple[Path, Path]]]:
    """Plan a batch; raises :class:`InputError` when nothing to deface is found."""
    if layout not in LAYOUTS:
        raise InputError(root, f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise InputError(root, "is not a folder; pass a BIDS root or BraTS case folder(s), or a single image")
    if out_root.resolve() == root.resolve() or root.resolve() in out_root.resolve().parents:
        raise InputError(out_root, "is inside the input folder; write the defaced tree elsewhere (inputs are never overwritten)")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "bids":
        jobs, copies = plan_bids(root, out_root)
    elif layout == "brats":
        jobs, copies = plan_brats(root, out_root)
    else:
        raise InputError(root, "is neither a BIDS tree (sub-*/anat/*.nii.gz) nor BraTS case folders "
                               "(<case>/<case>_t1.nii.gz ...); pass --layout or a single image")
    if not jobs:
        raise InputError(root, f"contains no {layout} images to deface")
    return jobs, copies


def run_batch(jobs: list[DefaceJob], out_root: Path, *, copies=(), config=None, device=None) -> dict:
    """Run every job; returns (and writes) the summary. ``summary["failed"]`` lists failures."""
    results, failed = [], []
    for i, job in enumerate(jobs, 1):
        log.info("[%d/%d] %s", i, len(jobs), job.reference)
        try:
            rec = deface_job(job, config=config, device=device)
            results.append({"input": str(job.reference), "output": str(job.output), "status": "ok",
                            "removed_ml": rec["removed_ml"], "seconds": rec["seconds"],
                            "apply_to": rec["apply_to"]})
        except FedimgError as exc:
            status = "qc_failed" if exc.exit_code == 3 else "error"
            log.error("%s", exc)
            entry = {"input": str(job.reference), "output": str(job.output), "status": status, "error": str(exc)}
            results.append(entry)
            failed.append(entry)
    for src, dst in copies:
        write_bytes(dst, src.read_bytes())
    summary = {"tool": "fedimg", "total": len(jobs), "ok": len(jobs) - len(failed), "failed": failed, "files": results}
    write_json(out_root / "deface_summary.json", summary)
    return summary

"""``fedimg deface``: remove the face from head MRI (GPU when present), with QC and provenance.

    fedimg deface sub-01_T1w.nii.gz -o sub-01_T1w_defaced.nii.gz
    fedimg deface bids_root/ -o bids_defaced/                       # every anat image, tree mirrored
    fedimg deface data/site-1 -o data_defaced/site-1 --layout brats # t1 registered, others follow
    fedimg deface t1.nii.gz -o t1_defaced.nii.gz --apply-to flair.nii.gz t2.nii.gz --protect seg.nii.gz
    fedimg deface head_ct.nii.gz -o head_ct_defaced.nii.gz --modality ct   # removed voxels -> air

Exit codes: 0 all defaced and QC passed; 2 bad input or option; 3 a QC failure (batch: any
file failed, see ``deface_summary.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path

__all__ = ["register", "run", "freed_memory_reused", "one_blas_thread", "template_cache_dir", "CACHE_ENV"]

#: Environment variable naming the template cache folder (:mod:`fedimg.deface.template_cache`); empty or ``off``: none.
CACHE_ENV = "FEDIMG_CACHE_DIR"

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deface",
        help="remove the face from head MRI (template registration + face mask), with QC and provenance",
        description="Deface 3-D head MRI: register the pydeface template (batched multi-start affine, mutual "
        "information: numpy on the CPU, PyTorch on a GPU), warp its face mask and remove the face, never the "
        "brain or --protect labels. "
        "Writes the defaced image, a provenance sidecar (.deface.json), a QC JSON and, for a file that fails QC "
        "(or with --qc-png always), a QC PNG. "
        "The template's decoded arrays are kept in a cache folder (about 165 MB) that later runs map instead of "
        "decoding the template again: $FEDIMG_CACHE_DIR, else $XDG_CACHE_HOME/fedimg, else ~/.cache/fedimg; "
        "FEDIMG_CACHE_DIR=off for none.",
    )
    p.add_argument("input", type=Path, help="a NIfTI/NRRD image, a BIDS root, or BraTS case folder(s)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output image (single input) or output folder (batch); never the input")
    p.add_argument("--apply-to", nargs="+", type=Path, default=[], metavar="IMG",
                   help="co-registered images (same grid) that get the same removal; written next to --output "
                        "as <name>_defaced.nii.gz unless --apply-to-output is given")
    p.add_argument("--apply-to-output", nargs="+", type=Path, default=None, metavar="OUT",
                   help="output paths for --apply-to images, in the same order")
    p.add_argument("--protect", nargs="+", type=Path, default=[], metavar="LABEL",
                   help="label images (same grid) whose non-zero voxels are never removed (e.g. tumour)")
    p.add_argument("--modality", choices=["auto", "mr", "ct"], default="auto",
                   help="mr, ct or auto (default: CT when the values look like Hounsfield units or the head "
                        "histogram is CT-like); CT registers by head shape and fills removed voxels with air")
    p.add_argument("--layout", choices=["auto", "bids", "brats"], default="auto", help="batch folder layout")
    p.add_argument("--mode", choices=["zero", "blur"], default="zero", help="zero the face (default) or blur it")
    p.add_argument("--preset", choices=["auto", "fast", "coarse", "default", "accurate"], default="auto",
                   help="registration effort (auto: coarse for inputs of 1.8 mm or coarser)")
    p.add_argument("--fast", action="store_const", const="fast", dest="preset", help="same as --preset fast")
    p.add_argument("--protect-margin-mm", type=float, default=2.0, help="dilation of --protect labels (mm)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the voxel sampling")
    p.add_argument("--qc-png", choices=["off", "fail", "always"], default="fail", dest="qc_png",
                   help="when to draw the QC picture <name>.qc.png: fail (default: only for a file that fails QC, "
                        "to look at), always, or off")
    p.add_argument("--no-png", action="store_const", const="off", dest="qc_png", help="same as --qc-png off")
    p.set_defaults(func=run)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's <malloc.h> parameter numbers


@contextlib.contextmanager
def freed_memory_reused():
    """While defacing, let glibc keep freed large blocks for reuse in one heap (about 0.9 CPU-s less per 1 mm head).

    Defacing allocates and frees many 16-64 MB arrays; glibc maps each afresh (``mmap``) and the
    kernel zeroes every page again (about 1.8 s of system time per head on 2 cores). With a
    1 GiB mmap/trim threshold and one arena they are reused instead (peak memory about +0.13 GB).
    On exit glibc's default thresholds (128 KiB) and an arena limit of 8 per CPU are set back
    and the heap is trimmed, so a process that goes on (tests, a notebook) gets its memory back.
    Yields False where ``mallopt`` is missing (not glibc) or refuses; nothing changes then.

    >>> with freed_memory_reused() as on:
    ...     on in (True, False)
    True
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both or nothing
    except (OSError, AttributeError):
        yield False
        return
    reuse = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_ARENA_MAX, 1))
    on = all(libc.mallopt(key, value) == 1 for key, value in reuse)
    try:
        yield on
    finally:
        if on:
            for key, value in ((_M_MMAP_THRESHOLD, 128 * 1024), (_M_TRIM_THRESHOLD, 128 * 1024),
                               (_M_ARENA_MAX, 8 * (os.cpu_count() or 1))):
                libc.mallopt(key, value)
            libc.malloc_trim(0)


def _defaced_name(path: Path, out_dir: Path) -> Path:
    from fedimg.imageio.suffixes import DEFAULT_SUFFIX, stem

    return out_dir / f"{stem(path)}_defaced{DEFAULT_SUFFIX}"


def _check_output_names(args: argparse.Namespace) -> None:
    """A single image's outputs must be images (.nii.gz, .nii, .nrrd for an NRRD input): checked before any work."""
    from fedimg.errors import InputError
    from fedimg.imageio.suffixes import is_nifti, is_nrrd

    if args.input.is_dir():
        return
    pairs = [(args.input, args.output), *zip(args.apply_to, args.apply_to_output or [])]
    for src, out in pairs:
        if is_nrrd(out) and not is_nrrd(src):
            raise InputError(out, "NRRD output needs an NRRD input; write .nii.gz instead")
        if not (is_nifti(out) or is_nrrd(out)):
            raise InputError(out, "output must end in .nii.gz, .nii or (for NRRD inputs) .nrrd; nothing was written")


def run(args: argparse.Namespace) -> int:
    with freed_memory_reused():
        return _run(args)


def one_blas_thread() -> None:
    """OpenBLAS at one thread for ``fedimg deface``, unless ``OPENBLAS_NUM_THREADS`` is set already.

    Defacing's BLAS calls are small (products over a few thousand samples) and its own threads
    (QC beside the registration, :mod:`fedimg.deface.pipeline`) use the cores; a BLAS pool of
    ``OMP_NUM_THREADS`` threads busy-waits beside them (h12t: user CPU 5.1-5.3 s against 4.3 s per
    1 mm head at ``--threads 2``, the same bytes). OpenBLAS reads it once, when numpy is first
    imported, so this runs before that (a no-op, logged, where numpy is imported already).
    """
    import sys

    if "numpy" in sys.modules:  # e.g. fedimg.cli.main called from a Python session: too late to matter
        log.debug("numpy is imported already: OpenBLAS's thread count is left as it is")
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def template_cache_dir(environ=None) -> Path | None:
    """Where ``fedimg deface`` keeps the template's decoded arrays (:mod:`fedimg.deface.template_cache`).

    ``$FEDIMG_CACHE_DIR`` (empty or ``off``: no cache), else ``$XDG_CACHE_HOME/fedimg``, else ``~/.cache/fedimg``.

    >>> template_cache_dir({"FEDIMG_CACHE_DIR": "/tmp/c"}), template_cache_dir({"FEDIMG_CACHE_DIR": "off"})
    (PosixPath('/tmp/c'), None)
    """
    env = os.environ if environ is None else environ
    if CACHE_ENV in env:
        value = env[CACHE_ENV].strip()
        return None if value.lower() in ("", "off", "0", "none") else Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path("~").expanduser() / ".cache")
    return Path(base) / "fedimg"


def _run(args: argparse.Namespace) -> int:
    from fedimg.cli import env_threads

    one_blas_thread()  # before the imports below bring numpy in
    from fedimg.cli.deidentify import deface_device
    from fedimg.deface.batch import plan, run_batch
    from fedimg.deface.core import DefaceConfig
    from fedimg.deface.pipeline import DefaceJob, deface_job, prefetch_template
    from fedimg.deface.template_cache import set_cache_dir
    from fedimg.device import available_cpus, configure_threads
    from fedimg.errors import ConfigError, InputError
    from fedimg.imageio.nifti import import_nibabel_without_pydicom

    _check_output_names(args)
    import_nibabel_without_pydicom()  # before anything reads an image
    threads = args.threads or env_threads()
    cpus = available_cpus()
    set_cache_dir(template_cache_dir())  # before the template is first read
    if args.input.exists() and (threads or cpus) >= 2:
        prefetch_template()  # the template's read beside the subject's (and any torch import)
    configure_threads(threads, numba=False, torch=False)  # no numba code; torch only where imported
    device = deface_device(args.device)
    config = DefaceConfig(preset=args.preset, modality=args.modality, mode=args.mode, protect_margin_mm=args.protect_margin_mm, seed=args.seed)
    if not args.input.exists():
        raise InputError(args.input, "does not exist; pass an image, a BIDS root or BraTS case folder(s)")
    if args.input.is_dir():
        if args.apply_to or args.protect:
            raise ConfigError("--apply-to/--protect are for a single image; batch mode pairs files by layout")
        jobs, copies = plan(args.input, args.output, args.layout)
        import dataclasses

        jobs = [dataclasses.replace(j, png=args.qc_png) for j in jobs]
        summary = run_batch(jobs, args.output, copies=copies, config=config, device=device)
        log.info("defaced %d of %d; summary in %s", summary["ok"], summary["total"], args.output / "deface_summary.json")
        for f in summary["failed"]:
            log.error("FAILED %s: %s", f["input"], f["error"])
        if not summary["failed"]:
            return 0
        return 3 if any(f["status"] == "qc_failed" for f in summary["failed"]) else 2
    if args.output.is_dir():
        raise InputError(args.output, "is a folder; for a single image give the output file name (.nii.gz)")
    outs = args.apply_to_output
    if outs is None:
        outs = [_defaced_name(p, args.output.parent) for p in args.apply_to]
    elif len(outs) != len(args.apply_to):
        raise ConfigError("--apply-to-output needs one path per --apply-to image")
    job = DefaceJob(reference=args.input, output=args.output, apply_to=tuple(zip(args.apply_to, outs)),
                    protect=tuple(args.protect), png=args.qc_png)
    deface_job(job, config=config, device=device)
    return 0

"""Deface files: one reference scan, optional co-registered scans (``--apply-to``) and labels.

For each output the defacer writes the image (input shape, affine, dtype, scaling and
orientation; NIfTI ``descrip`` from :func:`fedimg.imageio.provenance.defaced_descrip`), the
provenance sidecar (:func:`fedimg.imageio.provenance.write_deface_record`, with the content
hash of the voxels written, :func:`fedimg.imageio.provenance.written_voxel_sha256`: the same
hash a fresh read gives, without reading the image back) and, per reference, a QC JSON next
to the reference output and a QC PNG as ``DefaceJob.png`` says: ``"fail"`` (default: only
when QC fails, where a person must look), ``"always"`` or ``"off"``. A failed QC writes only
the QC files (for review) and raises :class:`fedimg.errors.QCError`; inputs are never modified.

>>> plan = DefaceJob(reference=Path("t1.nii.gz"), output=Path("out/t1.nii.gz"))
>>> qc_paths(plan.output)[0].name, plan.png
('t1.qc.json', 'fail')
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

import numpy as np

from fedimg import __version__
from fedimg.errors import ConfigError, InputError, QCError
from fedimg.imageio.provenance import defaced_descrip, sidecar_path, stem, write_deface_record, written_voxel_sha256
from fedimg.imageio.volume import Volume, encode_like, load_volume, save_like, to_canonical
from fedimg.io import ensure_not_input, write_bytes, write_json

from .beside import collect, queue_calls
from .blas import serial_blas
from .core import DefaceConfig, face_removal
from .masks import apply_removal
from .qc import check_removal, render_qc_png
from .template import load_template

__all__ = ["DefaceJob", "deface_job", "qc_paths", "PNG_MODES"]

log = logging.getLogger(__name__)

PNG_MODES = ("off", "fail", "always")  # when the QC picture is drawn


@dataclasses.dataclass(frozen=True, kw_only=True)
class DefaceJob:
    """One registration: ``reference`` → ``output``; ``apply_to`` (input, output) pairs share it.

    ``protect``: label images on the reference grid whose non-zero voxels are never removed.
    ``copy``: (input, output) pairs copied byte for byte (e.g. segmentation labels).
    ``png``: when to draw the QC picture, one of :data:`PNG_MODES` (``True`` means
    ``"always"``, ``False`` ``"off"``, as before these modes).
    """

    reference: Path
    output: Path
    apply_to: tuple[tuple[Path, Path], ...] = ()
    protect: tuple[Path, ...] = ()
    copy: tuple[tuple[Path, Path], ...] = ()
    png: str = "fail"

    def __post_init__(self) -> None:
        if isinstance(self.png, bool):
            object.__setattr__(self, "png", "always" if self.png else "off")
        if self.png not in PNG_MODES:
            raise ConfigError(f"QC picture mode {self.png!r}: choose one of {', '.join(PNG_MODES)}")

    def inputs(self) -> list[Path]:
        return [self.reference, *(a for a, _ in self.apply_to), *self.protect, *(a for a, _ in self.copy)]

    def outputs(self) -> list[Path]:
        return [self.output, *(b for _, b in self.apply_to), *(b for _, b in self.copy)]


def qc_paths(output: Path) -> tuple[Path, Path]:
    """QC JSON and PNG paths for a reference output."""
    return output.with_name(f"{stem(output)}.qc.json"), output.with_name(f"{stem(output)}.qc.png")


def _same_grid(ref: Volume, other: Volume) -> None:
    if other.shape != ref.shape:
        raise InputError(other.path, f"shape {other.shape} differs from {ref.path.name} {ref.shape}; "
                                     "--apply-to/--protect images must be on the reference grid (resample them first)")
    if not np.allclose(other.affine, ref.affine, atol=1e-3):
        raise InputError(other.path, f"affine differs from {ref.path.name}; --apply-to/--protect images must be "
                                     "co-registered on the reference grid (resample them first)")


def _check_paths(job: DefaceJob) -> None:
    outs = job.outputs()
    for out in outs:
        ensure_not_input(out, *job.inputs())
    resolved = [p.resolve() for p in outs]
    if len(set(resolved)) != len(resolved):
        raise InputError(outs[0], "two outputs share one path; give each input its own output")
    extras = [sidecar_path(o).resolve() for o in outs] + [p.resolve() for p in qc_paths(job.output)]
    for inp in job.inputs():
        if inp.resolve() in extras:
            raise InputError(inp, "would be overwritten by a sidecar or QC file; choose another output folder")


@serial_blas
def deface_job(job: DefaceJob, *, config: DefaceConfig | None = None, device=None, qc_thread: bool | None = None) -> dict:
    """Run one job; returns the QC record. Raises ``InputError`` (bad input) or ``QCError`` (QC failed).

    ``qc_thread``: run QC's image-only work (:class:`_QCWorker`) in a second thread beside the
    registration; ``None`` (default): with two or more CPU threads (``--threads``; :func:`fedimg.device.configured_threads`).
    The record and the outputs are the same either way.
    """
    config = config or DefaceConfig()
    t0 = time.perf_counter()
    _check_paths(job)
    if qc_thread is None:
        from fedimg.device import configured_threads

        qc_thread = configured_threads() >= 2
    with _QCWorker(qc_thread, config, device) as worker:
        return _run_job(job, config, device, worker, t0)


class _QCWorker:
    """QC's work that needs only the image and the head-shape alignments, done in two helper threads.

    The threads read the template (and prepare its MI pyramid) while the main thread reads
    the subject, then compute QC's own brain estimate (:func:`.brainmask.estimate_brain`)
    and, once the head-shape alignments are known (``on_coarse`` of
    :func:`.core.face_removal`, before the MI stage), the head-shape cross-check
    (:func:`.qc.head_shape_brain`) in one thread and the head-outline placement
    (:func:`.qc_face.shape_placement`) in the other, while the main thread runs the MI
    registration and warps the face mask; then ``brain_in_head`` and ``start_agreement_dice``
    (``face_removal``'s ``pool``) beside that warp, and the outputs' gzip encoding
    (:func:`fedimg.imageio.volume.encode_like`) beside the main thread's QC. numpy, scipy.ndimage, zlib/ISA-L and torch release
    the GIL in this work, so two cores share it. It is the same computation
    :func:`.qc.check_removal` makes without it (:func:`.qc._shape_checks`).
    """

    def __init__(self, enabled: bool, config: DefaceConfig, device):
        from concurrent.futures import Future, ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(2, thread_name_prefix="fedimg-qc") if enabled else None
        self.coarse: Future = Future()
        self.canonical: Future = Future()  # the canonical image both QC tasks work on
        self.result = self.shape = None
        self.config, self.device = config, device
        if self.pool is not None:
            self.pool.submit(_warm_template)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        _settle(self.coarse, None)  # face_removal failed: let the threads finish
        _settle(self.canonical, None)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def start(self, can: np.ndarray, can_aff: np.ndarray) -> None:
        """Queue the MI template pyramid, QC's brain estimate and the head-outline placement of the
        reference's canonical (scaled, float32) copy ``can`` (:func:`to_canonical`, made once per job)."""
        _settle(self.canonical, (can, can_aff))
        if self.pool is not None:
            levels = self.config.registration_for(np.sqrt((can_aff[:3, :3] ** 2).sum(axis=0))).levels_mm
            if self.device is None or getattr(self.device, "type", "cpu") == "cpu":
                self.pool.submit(_warm_levels, levels)
            self.result = self.pool.submit(_qc_estimate, can, can_aff, self.coarse)
            self.shape = self.pool.submit(_qc_shape, self.canonical, self.coarse)  # starts after _qc_estimate

    def on_coarse(self, modality: str, head_shape) -> None:
        _settle(self.coarse, (modality, head_shape))

    def qc_kwargs(self) -> dict:
        got = None if self.result is None else self.result.result()
        face_shape = None if self.shape is None else self.shape.result()
        return {} if got is None else {"estimate": got, "estimate_checked": True, "face_shape": face_shape}


def _settle(future, value) -> None:
    """Give ``future`` its result unless it has one."""
    from concurrent.futures import InvalidStateError

    try:
        future.set_result(value)
    except InvalidStateError:
        pass


_PREFETCH: list = []


def prefetch_template() -> None:
    """Start reading the template (and importing scipy.ndimage) in a background thread, once per process.

    ``fedimg deface`` calls it before it imports torch (about 1.5 s), so the template's gzip
    decoding (which releases the GIL) runs beside that import. Reads are cached
    (:mod:`.template`); an error here is left for the main thread's own read to raise.
    """
    if not _PREFETCH:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix="fedimg-prefetch")
        _PREFETCH.append(pool.submit(_warm_template))
        pool.shutdown(wait=False)


def _warm_template() -> None:
    """Read the template's intensities and make its 4 mm head mask (the coarse stage waits for them), then
    read its face and brain maps (needed after the registration) and their corner tables; cached per process."""
    from scipy import ndimage  # noqa: F401 - its first import (~0.3 s) here, beside the subject's read

    from .resample_masks import cube_codes
    from .template import template_head_mask

    template_head_mask(4.0)
    template = load_template()
    for binary in (template.face, template.brain):  # the warps' corner tables (:mod:`.resample_masks`), once
        cube_codes(binary)


def _warm_levels(levels) -> None:
    """The template's MI pyramid levels for the CPU registration (cached by :mod:`.register_np`)."""
    from .register_np import template_level_np
    from .template import template_intensity

    intensity, affine = template_intensity()
    for mm in levels:
        template_level_np(intensity, affine, mm)


def _qc_estimate(can: np.ndarray, can_aff: np.ndarray, coarse):
    """QC's brain estimate of the canonical image cross-checked against the head shape; None when
    face_removal failed or the head is CT."""
    from .brainmask import estimate_brain
    from .qc import _shape_candidates, head_shape_brain

    est = estimate_brain(can, can_aff)
    got = coarse.result()
    if got is None:
        return None
    modality, head_shape = got
    if modality != "mr":  # CT QC estimates the intracranial volume itself (:mod:`.ct_qc`), not this MR estimate
        return None
    # deface_job gives no brain_protect; the same call as qc._shape_checks's first half
    est = head_shape_brain(can, can_aff, est, candidates=_shape_candidates(can, can_aff, head_shape))
    if est.brain.any():
        est.head_brain_distance, est.frame  # noqa: B018 - computed here (cached) rather than on the main thread
    return est


def _qc_shape(canonical, coarse):
    """The head-outline placement (:func:`.qc_face.shape_placement`, qc._shape_checks's second
    half); None when face_removal failed or the head is CT."""
    from .qc import _shape_candidates
    from .qc_face import shape_placement

    got, canon = coarse.result(), canonical.result()
    if got is None or canon is None or got[0] != "mr":
        return None
    can, can_aff = canon
    return shape_placement(can, can_aff, _shape_candidates(can, can_aff, got[1]))


def _run_job(job: DefaceJob, config: DefaceConfig, device, worker: _QCWorker, t0: float) -> dict:
    """Long because it is the whole job: read and check, remove, QC, write (``deface_job``)."""
    ref = load_volume(job.reference, what="reference image")
    others = [load_volume(a, what="--apply-to image") for a, _ in job.apply_to]
    labels = [load_volume(p, what="--protect label", require_signal=False) for p in job.protect]
    for vol in (*others, *labels):
        _same_grid(ref, vol)
    for src, _ in job.copy:
        if not src.is_file():
            raise InputError(src, "does not exist; check the path")
    protect = None
    for lab in labels:
        protect = (lab.raw != 0) if protect is None else (protect | (lab.raw != 0))
    scaled = ref.scaled()
    canonical = to_canonical(scaled, ref.affine)  # one canonical copy for the removal and QC's threads
    worker.start(*canonical)
    removal = face_removal(scaled, ref.affine, protect=protect, config=config, device=device,
                           on_coarse=worker.on_coarse, canonical=canonical, pool=worker.pool)
    spacing = ref.spacing
    outputs = [(ref, job.output)] + list(zip(others, (b for _, b in job.apply_to)))
    new_raw, changed_protected = _apply(outputs, removal, protect, config, spacing)
    descrip = defaced_descrip(__version__)
    encode = functools.partial(encode_like, descrip=descrip)  # gzip the outputs beside QC; written only if it passes
    encoded = queue_calls(worker.pool, *((encode, vol, raw, target) for (vol, target), raw in zip(outputs, new_raw)))
    voxel_ml = float(abs(np.linalg.det(ref.affine[:3, :3]))) / 1000.0
    record = check_removal(scaled, ref.affine, removal, config.qc, protected_changed_ml=changed_protected * voxel_ml,
                           pool=worker.pool, **worker.qc_kwargs())
    record.update({
        "reference": str(job.reference), "output": str(job.output),
        "apply_to": [str(b) for _, b in job.apply_to], "protect": [str(p) for p in job.protect],
        "mode": config.mode, "tool": "fedimg", "version": __version__,
        "subject_to_template": removal.registration.subject_to_template.tolist(),
    })
    qc_json, qc_png = qc_paths(job.output)
    if job.png == "always" or (job.png == "fail" and not record["passed"]):
        _write_png(qc_png, ref, scaled, new_raw[0], removal, record)
        record["qc_png"] = str(qc_png)
    else:
        qc_png.unlink(missing_ok=True)  # an earlier run's picture would no longer match this record
    if not record["passed"]:
        for _, future in encoded:  # nothing is written: drop the encodings no thread has started
            if future is not None:
                future.cancel()
        record["seconds"] = time.perf_counter() - t0
        write_json(qc_json, record)
        kept = f"{qc_json.name}; inspect {qc_png.name}" if "qc_png" in record else qc_json.name
        raise QCError(f"{job.reference}: defacing QC failed ({'; '.join(record['failures'])}); "
                      f"nothing written except {kept}")
    summary = {k: record[k] for k in ("passed", "mutual_information", "agreement_mm", "removed_ml",
                                      "protected_changed_ml", "brain_in_head", "brain_removed_ml",
                                      "removed_fraction", "face_near_removed")}
    for (vol, target), raw, queued in zip(outputs, new_raw, encoded):
        save_like(vol, raw, target, descrip=descrip, encoded=collect([queued])[0])
        write_deface_record(target, source=vol.path, reference=job.reference.name, version=__version__,
                            mode=config.mode, qc=summary, qc_report=qc_json.name,
                            voxel_hash=written_voxel_sha256(target, raw))
    for src, dst in job.copy:
        write_bytes(dst, src.read_bytes())
    record["seconds"] = time.perf_counter() - t0
    write_json(qc_json, record)
    log.info("%s: removed %.0f mL, MI %.3f, %.1f s -> %s", job.reference.name, record["removed_ml"],
             record["mutual_information"], record["seconds"], job.output)
    return record


def _apply(outputs, removal, protect, config: DefaceConfig, spacing) -> tuple[list[np.ndarray], int]:
    """Removed copies of every output's raw data, and how many protected voxels changed in them."""
    from .morph import bounding_box

    new_raw = []
    changed_protected = 0
    fill = float(getattr(removal, "fill_value", 0.0))  # air for CT, 0 for MR
    # apply_removal changes only removed voxels (zeroed or blurred): count the changed ones in the removal's box
    box = bounding_box(removal.remove)
    for vol, _ in outputs:
        out = apply_removal(vol.raw, removal.remove, mode=config.mode, zero_value=_raw_value(vol, fill),
                            spacing=spacing, blur_mm=config.blur_mm)
        if box is not None:
            changed = out[box] != vol.raw[box]
            changed_protected += int((changed & removal.protected[box]).sum())
            if protect is not None:
                changed_protected += int((changed & protect[box]).sum())
        new_raw.append(out)
    return new_raw, changed_protected


def _raw_value(vol: Volume, scaled_value: float = 0.0):
    """The stored value that reads as ``scaled_value`` after scaling (clipped to the dtype)."""
    value = scaled_value if vol.slope == 0 else (scaled_value - vol.inter) / vol.slope
    if np.issubdtype(vol.raw.dtype, np.integer):
        info = np.iinfo(vol.raw.dtype)
        return vol.raw.dtype.type(np.clip(np.rint(value), info.min, info.max))
    return vol.raw.dtype.type(value)


def _write_png(path: Path, ref: Volume, before_scaled: np.ndarray, after_raw: np.ndarray, removal, record) -> None:
    try:
        before, aff = to_canonical(before_scaled, ref.affine)
        after_vol = dataclasses.replace(ref, raw=after_raw)
        after, _ = to_canonical(after_vol.scaled(), ref.affine)
        rem, _ = to_canonical(removal.remove, ref.affine)
        prot, _ = to_canonical(removal.protected, ref.affine)
        spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
        status = "PASSED" if record["passed"] else "FAILED: " + "; ".join(record["failures"])
        title = (f"{ref.path.name}  removed {record['removed_ml']:.0f} mL  MI {record['mutual_information']:.3f}  "
                 f"agreement {record['agreement_mm']:.1f} mm  {status}")
        render_qc_png(path, before, after, rem, prot, spacing, title)
    except Exception:  # the picture is a convenience; its failure must not hide the QC result
        log.warning("%s: QC picture could not be drawn", path, exc_info=True)

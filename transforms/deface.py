"""Defacing as MONAI transforms: ``deface_volume`` (maths), ``Deface`` (array), ``Defaced`` (dict).

The registration and face-mask work is :func:`fedimg.deface.face_removal`; these wrappers
accept numpy arrays or (Meta)Tensors, channel-first ``(1, X, Y, Z)`` or plain ``(X, Y, Z)``,
and give back the same type, shape and dtype. ``Defaced`` registers once, on the reference
key, applies that removal to every image key and never touches label keys (labels are
used as protection: their voxels are never removed).

Both run the same QC as ``fedimg deface`` (:func:`fedimg.deface.qc.check_removal`: brain
estimated from the image itself untouched, plausible removed volume, face removed and
centred, starts agreeing) and raise :class:`fedimg.errors.QCError` naming the image when it
fails: a failed registration never comes back as a normal image.

>>> import numpy as np
>>> from fedimg.deface import DefaceConfig
>>> t = Deface(config=DefaceConfig(preset="fast"))
>>> [b.value for b in t.backend]
['torch', 'numpy']

``t(img, affine=aff)`` gives an array of ``img``'s shape and dtype with the face voxels zeroed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from fedimg.deface.core import DefaceConfig, FaceRemoval, face_removal
from fedimg.deface.masks import apply_removal
from fedimg.deface.qc import check_removal
from fedimg.errors import QCError

__all__ = ["deface_volume", "checked", "Deface", "Defaced"]


def _to_numpy(x) -> tuple[np.ndarray, bool]:
    """``(array (X, Y, Z), had_channel)`` from numpy/torch, channel-first or not."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim == 4 and arr.shape[0] == 1:
        return arr[0], True
    if arr.ndim != 3:
        raise ValueError(f"defacing needs a 3-D volume (X, Y, Z) or (1, X, Y, Z), got shape {arr.shape}")
    return arr, False


def _like(template, arr: np.ndarray, had_channel: bool):
    out = arr[None] if had_channel else arr
    if hasattr(template, "detach"):
        import torch

        t = torch.as_tensor(out, device=template.device)
        if hasattr(template, "copy_meta_from"):  # MetaTensor: keep affine and meta
            from monai.data import MetaTensor

            return MetaTensor(t, meta=dict(template.meta), applied_operations=list(template.applied_operations))
        return t
    return out


def _affine_of(img, affine) -> np.ndarray:
    if affine is None:
        affine = getattr(img, "affine", None)
    if affine is None:
        raise ValueError("defacing needs the voxel-to-world affine: pass affine=... or a MetaTensor")
    a = affine.detach().cpu().numpy() if hasattr(affine, "detach") else np.asarray(affine)
    return a.astype(np.float64)


def deface_volume(image: np.ndarray, affine: np.ndarray, *, config: DefaceConfig | None = None,
                  protect: np.ndarray | None = None, removal: FaceRemoval | None = None,
                  device=None) -> tuple[np.ndarray, FaceRemoval]:
    """Remove the face from a 3-D ``image`` (any orientation); returns ``(defaced copy, removal)``.

    Pass ``removal`` from an earlier call to reuse its registration and mask (co-registered images).
    """
    config = config or DefaceConfig()
    if removal is None:
        removal = face_removal(image, affine, protect=protect, config=config, device=device)
    elif removal.remove.shape != image.shape:
        raise ValueError(f"removal mask shape {removal.remove.shape} != image shape {image.shape}")
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    fill = np.asarray(getattr(removal, "fill_value", 0.0)).astype(image.dtype)  # air for CT
    out = apply_removal(image, removal.remove, mode=config.mode, zero_value=fill, spacing=spacing, blur_mm=config.blur_mm)
    return out, removal


def _name(img, meta=None, default: str = "image") -> str:
    """A name for error messages: the source file from MONAI metadata, else ``default``."""
    for m in (getattr(img, "meta", None), meta):
        if isinstance(m, Mapping) and m.get("filename_or_obj"):
            return str(m["filename_or_obj"])
    return default


def checked(image: np.ndarray, affine: np.ndarray, out: np.ndarray, removal: FaceRemoval, config: DefaceConfig,
            protect: np.ndarray | None, name: str) -> dict:
    """QC of one defacing (``out`` is the defaced ``image``); raises :class:`QCError` naming ``name`` on failure."""
    changed = 0
    if protect is not None:
        changed = int(((out != image) & (protect != 0)).sum())
    voxel_ml = float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    record = check_removal(image, affine, removal, config.qc, protected_changed_ml=changed * voxel_ml)
    if not record["passed"]:
        raise QCError(f"{name}: defacing QC failed ({'; '.join(record['failures'])}); "
                      "the image was not defaced; check it, or run fedimg deface on the file to get the QC picture")
    return record


class Deface(Transform):
    """Array transform: ``Deface(config)(img, affine=None, protect=None)`` → defaced copy of ``img``."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, config: DefaceConfig | None = None, device=None) -> None:
        self.config = config or DefaceConfig()
        self.device = device
        self.last_removal: FaceRemoval | None = None
        self.last_qc: dict | None = None

    def __call__(self, img, affine=None, protect=None, name: str | None = None):
        """Defaced copy of ``img``; raises :class:`QCError` (naming ``name`` or the source file) if QC fails."""
        arr, ch = _to_numpy(img)
        prot = None if protect is None else _to_numpy(protect)[0]
        aff = _affine_of(img, affine)
        self.last_qc = None
        out, self.last_removal = deface_volume(arr, aff, config=self.config, protect=prot, device=self.device)
        self.last_qc = checked(arr, aff, out, self.last_removal, self.config, prot, name or _name(img))
        return _like(img, out, ch)


class Defaced(MapTransform):
    """Dict transform: register on ``reference_key``, apply one removal to all ``keys``.

    ``label_keys`` are read as protection and returned untouched. The QC record goes to
    ``data[qc_key]``; a failed QC raises :class:`QCError` naming the reference image. The
    affine comes from a MetaTensor, ``data["<ref>_affine"]`` or ``data["<ref>_meta_dict"]["affine"]``.
    """

    backend = Deface.backend

    def __init__(self, keys: KeysCollection, *, label_keys: KeysCollection = (), reference_key: Hashable | None = None,
                 config: DefaceConfig | None = None, device=None, qc_key: str = "deface_qc",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys: Sequence[Hashable] = (label_keys,) if isinstance(label_keys, (str, int)) else tuple(label_keys)
        overlap = set(self.keys) & set(self.label_keys)
        if overlap:
            raise ValueError(f"keys {sorted(map(str, overlap))} are both image and label keys")
        self.reference_key = reference_key if reference_key is not None else self.keys[0]
        self.config = config or DefaceConfig()
        self.device = device
        self.qc_key = qc_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.reference_key]
        ref_arr, _ = _to_numpy(ref)
        protect = None
        for key in self.label_keys:
            if key in d:
                lab, _ = _to_numpy(d[key])
                protect = (lab != 0) if protect is None else (protect | (lab != 0))
        affine = d.get(f"{self.reference_key}_affine")
        meta = d.get(f"{self.reference_key}_meta_dict")
        if affine is None and isinstance(meta, Mapping):
            affine = meta.get("affine")
        affine = _affine_of(ref, affine)
        removal = face_removal(ref_arr, affine, protect=protect, config=self.config, device=self.device)
        ref_out, _ = deface_volume(ref_arr, affine, config=self.config, removal=removal)
        record = checked(ref_arr, affine, ref_out, removal, self.config, protect,
                         _name(ref, meta, default=f"image {self.reference_key!r}"))
        for key in self.key_iterator(d):
            arr, ch = _to_numpy(d[key])
            out = ref_out if key == self.reference_key else deface_volume(arr, affine, config=self.config,
                                                                          removal=removal)[0]
            d[key] = _like(d[key], out, ch)
        d[self.qc_key] = record
        return d

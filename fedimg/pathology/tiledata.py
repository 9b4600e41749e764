"""A site's labelled tiles cached on the training device (read once, reused every epoch and round).

:func:`prepare_tile_data` reads a tile store (``fedimg tiles`` output or PatchCamelyon-style
HDF5), keeps the labelled tiles, splits them train/val (stratified, seeded), stain-normalises
them once if the config asks, and keeps them as uint8 ``(N, 3, S, S)`` tensors on the device.

>>> import torch
>>> x = torch.full((4, 3, 8, 8), 200, dtype=torch.uint8)
>>> normalize_batches(x, lambda b: b // 2, batch=3).unique().tolist()
[100]
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError

__all__ = ["TileSiteData", "AUTO_STREAM_BYTES", "load_target_image", "stain_normalizer", "normalize_batches",
           "prepare_tile_data", "split_batches"]

#: ``stream="auto"`` streams a site whose labelled tiles take more than this many bytes
AUTO_STREAM_BYTES = 2 << 30

log = logging.getLogger(__name__)


@dataclass
class TileSiteData:
    """A site's tiles: uint8 ``(N, 3, S, S)`` images cached on ``device`` (``x_train``/``x_val``
    tensors), or streamed from the store (lists of
    :class:`~fedimg.pathology.tilestream.StoreRows`, stain-normalised per batch by
    ``transform``); int64 labels ``y_*`` on ``device`` either way."""

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    device: Any
    fingerprint: str
    classes: list[str]
    source: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    transform: Any = None

    @property
    def streamed(self) -> bool:
        return isinstance(self.x_train, list)

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.y_val.shape[0])


def load_target_image(path: str | Path):
    """An RGB image as a uint8 ``(3, H, W)`` tensor (the target of stain normalisation)."""
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise InputError(path, f"cannot be read as a target image ({exc}); pass an RGB PNG/JPEG tile") from None


def stain_normalizer(kind: str, target: str):
    """A ``MacenkoNormalize`` / ``ReinhardNormalize`` fitted to the image at ``target``."""
    from fedimg.transforms.stain import MacenkoNormalize, ReinhardNormalize

    img = load_target_image(target)
    return MacenkoNormalize(img) if kind == "macenko" else ReinhardNormalize(img)


def normalize_batches(x, norm, batch: int = 64):
    """Apply a stain normaliser to uint8 ``(N, 3, S, S)`` tensors in batches (same device)."""
    import torch

    return torch.cat([norm(x[i : i + batch]) for i in range(0, x.shape[0], batch)]) if len(x) else x


def split_batches(data: TileSiteData, split: str, batch: int):
    """``(x uint8 (B, 3, S, S), y)`` batches of the ``"train"`` or ``"val"`` tiles in order, on the device."""
    x, y = (data.x_val, data.y_val) if split == "val" else (data.x_train, data.y_train)
    if data.streamed:
        from .tilestream import iter_batches

        yield from iter_batches(x, y, batch, data.device, data.transform)
        return
    for i in range(0, len(y), batch):
        yield x[i : i + batch], y[i : i + batch]


def _split(y: np.ndarray, config: Any) -> np.ndarray:
    """Validation mask over ``y``: ``val_fraction`` of each class (at least one, never all), seeded."""
    rng = np.random.default_rng(config.seed)
    val_idx: list[int] = []
    for c in np.unique(y):  # stratified split
        members = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(members) * config.val_fraction))
        if config.val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_idx.extend(members[:n_val].tolist())
    val_mask = np.zeros(len(y), bool)
    val_mask[val_idx] = True
    return val_mask


def prepare_tile_data(path: str | Path, config: Any, device) -> TileSiteData:
    """Open a tile store (or PCam file), keep labelled tiles, split train/val, cache them on
    ``device`` or stream them (``config.stream``).

    ``config`` is a :class:`fedimg.pathology.config.TileTrainConfig` (``max_tiles``,
    ``num_classes``, ``seed``, ``val_fraction``, ``stain_normalize``, ``stain_target``,
    ``stream``); the split is stratified by class and seeded, the same in both modes.
    """
    import torch

    from .store import open_tile_store
    from .tilestream import StoreRows, open_files, read_rows

    info = open_tile_store(path, max_tiles=config.max_tiles)
    keep = np.flatnonzero(info.y >= 0)
    if len(keep) == 0:
        raise InputError(path, "has no labelled tiles; tile with --labels (GeoJSON/CSV) or use a labelled tile set")
    y = info.y[keep]
    if int(y.max()) >= config.num_classes:
        raise InputError(path, f"has label {int(y.max())} but the model has {config.num_classes} classes; pass --num-classes")
    val_mask = _split(y, config)
    s = info.tile_size
    stream = config.stream == "on" or (config.stream == "auto" and len(keep) * s * s * 3 > AUTO_STREAM_BYTES)
    norm = stain_normalizer(config.stain_normalize, str(config.stain_target)) if config.stain_normalize != "none" else None
    probe = StoreRows(info.path, keep[:: max(1, len(keep) // 16)])
    with open_files() as files:
        sample = read_rows(files, probe, 0, len(probe))
        h = hashlib.sha256(np.ascontiguousarray(y).tobytes())
        h.update(str((info.n, s, s, 3)).encode())
        h.update(np.ascontiguousarray(sample).tobytes())
        if not stream:
            x = torch.from_numpy(read_rows(files, StoreRows(info.path, keep), 0, len(keep))).permute(0, 3, 1, 2)
            x = x.contiguous().to(device)
    yt = torch.from_numpy(y).to(device)
    vm = torch.from_numpy(val_mask).to(device)
    classes = list(info.meta.get("classes") or [str(i) for i in range(config.num_classes)])
    common = {"device": device, "fingerprint": h.hexdigest()[:16], "classes": classes, "source": str(path)}
    log.info("%s: %d train / %d val tiles of %d px%s", path, int((~val_mask).sum()), int(val_mask.sum()), s,
             " (streamed from the store)" if stream else "")
    if stream:
        return TileSiteData(x_train=[StoreRows(info.path, keep[~val_mask])], y_train=yt[~vm],
                            x_val=[StoreRows(info.path, keep[val_mask])], y_val=yt[vm], transform=norm, **common)
    if norm is not None:
        x = normalize_batches(x, norm)
    return TileSiteData(x_train=x[~vm], y_train=yt[~vm], x_val=x[vm], y_val=yt[vm], **common)

"""Checkpoints: weights as safetensors, metadata as JSON next to them, no pickle anywhere.

``save_checkpoint("run/model.safetensors", model, meta)`` writes ``model.safetensors``
and ``model.json`` (model name, factory kwargs, config, epoch, metrics, data
fingerprint). Training state for exact resume (optimizer, LR schedule, RNG, epoch) goes to
``last.state.safetensors`` + ``last.state.json``.

>>> import tempfile, pathlib
>>> from fedimg.engine.models import build_model
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_checkpoint(d / "model.safetensors", build_model("unet"), {"model": "unet", "model_kwargs": {}})
>>> model, meta = load_checkpoint(d)
>>> meta["model"], type(model).__name__
('unet', 'UNet')
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedimg.errors import InputError
from fedimg.io import atomic_path, read_json, write_json

__all__ = ["save_checkpoint", "load_checkpoint", "meta_path", "save_train_state", "load_train_state",
           "resolve_checkpoint", "check_run_folder", "restore_run"]

log = logging.getLogger(__name__)


def meta_path(path: str | Path) -> Path:
    """``x.safetensors`` → ``x.json``."""
    p = Path(path)
    return p.with_name(p.name[: -len(".safetensors")] + ".json") if p.name.endswith(".safetensors") else p.with_suffix(".json")


def _save_tensors(path: Path, tensors: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp))


def _load_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(path, "does not exist; train a model first (fedimg train --out RUN) or check --model")
    try:
        return load_file(str(path))
    except Exception as exc:  # corrupt/truncated file
        raise InputError(path, f"is not a readable safetensors file ({exc}); use an intact checkpoint") from None


def save_checkpoint(path: str | Path, model: Any, meta: Mapping[str, Any]) -> None:
    """Write ``model``'s state dict to ``path`` (safetensors) and ``meta`` to the JSON beside it."""
    path = Path(path)
    _save_tensors(path, model.state_dict())
    write_json(meta_path(path), dict(meta))


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its best model, ``RUN/model.safetensors``."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise InputError(p, "no checkpoint here; pass a run folder written by `fedimg train --out RUN` or its .safetensors")
    return p


def load_checkpoint(path: str | Path, *, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the model named in the metadata and load its weights; returns ``(model, meta)``."""
    from fedimg.engine.models import build_model

    p = resolve_checkpoint(path)
    meta = read_json(meta_path(p))
    if not isinstance(meta, dict) or "model" not in meta:
        raise InputError(meta_path(p), "lacks the 'model' entry; it was not written by fedimg train")
    model = build_model(meta["model"], **meta.get("model_kwargs", {}))
    state = _load_tensors(p)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(p, f"weights do not fit model {meta['model']!r} ({str(exc).splitlines()[0]})") from None
    return model.to(device), meta


def _flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors: dict[str, Any] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        plain["state"][str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
                plain["state"][str(pid)][name] = {"tensor": f"optimizer.{pid}.{name}"}
            else:
                plain["state"][str(pid)][name] = {"value": value}
    return tensors, plain


def save_train_state(path: str | Path, state: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
    """Save a :meth:`fedimg.engine.loop.Trainer.state_dict` (tensors → safetensors, rest → JSON)."""
    path = Path(path)
    tensors, opt_plain = _flatten_optimizer(state["optimizer"])
    tensors["generator"] = state["generator"]
    if "torch_rng" in state:
        tensors["torch_rng"] = state["torch_rng"]
    dp = {}
    if "privacy" in state:  # DP-SGD: the sampling/noise generator and the accountant's history
        tensors["dp_generator"] = state["privacy"]["generator"]
        dp = {"dp_history": state["privacy"]["history"]}
    _save_tensors(path, tensors)
    write_json(meta_path(path), {"epoch": state["epoch"], "optimizer": opt_plain, "scheduler": state["scheduler"],
                                 **dp, **(dict(meta) if meta else {})})


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Inverse of :func:`save_train_state`."""
    path = Path(path)
    tensors = _load_tensors(path)
    plain = read_json(meta_path(path))
    try:
        opt_state = {}
        for pid, entries in plain["optimizer"]["state"].items():
            opt_state[int(pid)] = {k: tensors[v["tensor"]] if "tensor" in v else v["value"] for k, v in entries.items()}
        return {
            "epoch": int(plain["epoch"]),
            "optimizer": {"state": opt_state, "param_groups": plain["optimizer"]["param_groups"]},
            "scheduler": plain["scheduler"],
            "generator": tensors["generator"],
            **({"torch_rng": tensors["torch_rng"]} if "torch_rng" in tensors else {}),
            **({"privacy": {"generator": tensors["dp_generator"], "history": plain["dp_history"]}}
               if "dp_generator" in tensors else {}),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(meta_path(path), f"is not a fedimg training state ({exc!r}); start without --resume") from None



def check_run_folder(out: str | Path, *, resume: bool) -> tuple[Path, Path]:
    """Paths of a run folder's ``last.safetensors`` and ``last.state.safetensors``.

    Refuses ``resume`` without a saved state, and a fresh run over an existing one.
    """
    out = Path(out)
    last_path, state_path = out / "last.safetensors", out / "last.state.safetensors"
    if resume and not state_path.is_file():
        raise InputError(out, "has no training state to resume (last.state.safetensors); start without --resume")
    if not resume and last_path.exists():
        raise InputError(out, "already holds a training run; pass --resume to continue it or choose another --out")
    return last_path, state_path


def restore_run(out: str | Path, model: Any, trainer: Any, *, fingerprint: str,
                best: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load a run folder's last weights and trainer state into ``model``/``trainer``.

    Returns the per-epoch history up to the restored epoch and the best-so-far record
    (``best`` when the run has none). Warns when the data fingerprint changed.
    """
    from safetensors.torch import load_file

    from fedimg.engine.loop import load_global_params

    out = Path(out)
    prev = read_json(out / "metrics.json")
    if read_json(out / "last.json").get("data_fingerprint") != fingerprint:
        log.warning("resuming %s on data that differ from the run's original data (fingerprint changed)", out)
    load_global_params(model, load_file(str(out / "last.safetensors")))
    trainer.load_state_dict(load_train_state(out / "last.state.safetensors"))
    history = list(prev.get("epochs", []))[: trainer.epoch]
    log.info("resuming %s at epoch %d", out, trainer.epoch)
    return history, dict(prev.get("best") or best)

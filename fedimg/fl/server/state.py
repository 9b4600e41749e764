"""Run state on disk: per-round global checkpoints, metrics and resume (no NVFlare here).

Layout of a run folder ``RUN``::

    RUN/global_model.safetensors          latest global model (+ RUN/global_model.json)
    RUN/rounds/round-NNN.safetensors      global model after round NNN (1-based) + .json
    RUN/server_state.safetensors          server optimiser moments (FedOpt), if any
    RUN/metrics.json                      one entry per completed round
    RUN/state.json                        {"last_round": N, ...}

Every file is written atomically, so a server killed mid-write leaves the previous
round intact and :func:`load_latest` resumes from it.

>>> import numpy as np, tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> _ = save_round(run, 1, {"w": np.ones(2, np.float32)}, {"strategy": "fedavg"})
>>> r, params, meta = load_latest(run)
>>> r, params["w"].tolist(), meta["strategy"]
(1, [1.0, 1.0], 'fedavg')
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError
from fedimg.io import atomic_path, read_json, write_json

__all__ = [
    "round_path",
    "save_round",
    "load_latest",
    "load_params",
    "save_params",
    "append_metrics",
    "read_metrics",
    "save_server_state",
    "load_server_state",
]

log = logging.getLogger(__name__)


def round_path(run_dir: str | os.PathLike[str], rnd: int) -> Path:
    """``RUN/rounds/round-NNN.safetensors`` for 1-based round ``rnd``."""
    return Path(run_dir) / "rounds" / f"round-{int(rnd):03d}.safetensors"


def save_params(path: str | os.PathLike[str], params: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``params`` (name -> array/tensor) as safetensors with a JSON sidecar, atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    arrays = {k: np.ascontiguousarray(_to_numpy(v)) for k, v in params.items()}
    meta = dict(meta or {})
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"fedimg": json.dumps(meta, default=str)})
    write_json(path.with_suffix(".json"), meta)
    return path


def load_params(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_params` -> ``(params, meta)``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist; run `fedimg simulate` first or check the path")
    try:
        params = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"is not a readable safetensors file ({exc}); delete it to fall back a round") from None
    sidecar = path.with_suffix(".json")
    meta = read_json(sidecar) if sidecar.is_file() else {}
    return params, meta


def save_round(run_dir: str | os.PathLike[str], rnd: int, params: Mapping[str, Any], meta: Mapping[str, Any], *,
               server_state: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None) -> Path:
    """Checkpoint the global model after round ``rnd`` and mark it as the latest.

    ``server_state`` (FedOpt moments) and the round's ``metrics`` entry are written before the
    round is marked complete in ``state.json``, which is written last: a server killed half-way
    through leaves the previous round as the latest, never a round whose metrics or server
    state are missing.
    """
    run_dir = Path(run_dir)
    meta = {**dict(meta), "round": int(rnd)}
    path = save_params(round_path(run_dir, rnd), params, meta)
    if server_state is not None:
        save_server_state(run_dir, server_state, rnd)
    if metrics is not None:
        append_metrics(run_dir, metrics)
    latest = run_dir / "global_model.safetensors"
    with atomic_path(latest) as tmp:
        shutil.copyfile(path, tmp)
    write_json(latest.with_suffix(".json"), meta)
    write_json(run_dir / "state.json", {"last_round": int(rnd), "checkpoint": str(path.relative_to(run_dir))})
    log.info("round %d: global model saved to %s", rnd, path)
    return path


def load_latest(run_dir: str | os.PathLike[str]) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
    """``(last_round, params, meta)`` of the newest complete round, or ``None`` for a fresh run."""
    run_dir = Path(run_dir)
    state = run_dir / "state.json"
    if not state.is_file():
        return None
    last = int(read_json(state).get("last_round", 0))
    while last > 0:
        path = round_path(run_dir, last)
        if path.is_file():
            params, meta = load_params(path)
            return last, params, meta
        log.warning("%s is missing; falling back one round", path)
        last -= 1
    return None


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-round entries of ``RUN/metrics.json`` (empty for a fresh run)."""
    path = Path(run_dir) / "metrics.json"
    return list(read_json(path)) if path.is_file() else []


def append_metrics(run_dir: str | os.PathLike[str], entry: Mapping[str, Any]) -> None:
    """Add (or replace, by ``round``) one round's entry in ``RUN/metrics.json``."""
    entries = [e for e in read_metrics(run_dir) if e.get("round") != entry.get("round")]
    entries.append(dict(entry))
    entries.sort(key=lambda e: e.get("round", 0))
    write_json(Path(run_dir) / "metrics.json", entries)


def save_server_state(run_dir: str | os.PathLike[str], state: Mapping[str, Any], rnd: int) -> None:
    """Persist server optimiser state (e.g. FedOpt moments) for resume."""
    if state:
        save_params(Path(run_dir) / "server_state.safetensors", state, {"round": int(rnd)})


def load_server_state(run_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The server optimiser state saved with the latest complete round (``{}`` if none).

    A state saved for a later round than ``state.json``'s (the server died between the two
    writes) does not belong to the model the run resumes from: it is dropped with a warning.
    """
    path = Path(run_dir) / "server_state.safetensors"
    if not path.is_file():
        return {}
    params, meta = load_params(path)
    state = Path(run_dir) / "state.json"
    last = int(read_json(state).get("last_round", 0)) if state.is_file() else None
    if last is not None and "round" in meta and int(meta["round"]) != last:
        log.warning("%s is from round %s but the run resumes from round %d; server optimiser state starts afresh",
                    path, meta["round"], last)
        return {}
    return params


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)

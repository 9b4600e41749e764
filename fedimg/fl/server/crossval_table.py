"""The cross-site validation table and heatmap, wherever the evaluations ran.

``results`` is ``{model: {site: metrics}}`` (models such as ``"global"`` and ``"local
site-1"``; every site evaluated every model on its own validation cases). :func:`write_crossval`
writes ``OUT/crossval.json``, ``crossval.csv`` (one row per model, one column per site and
their mean, the task's key metric) and ``heatmap.png``. ``fedimg simulate`` / ``poc`` fill
``results`` on the host (:mod:`fedimg.study.crossval`); an exported job's server fills it from
NVFlare's cross-site evaluation (:mod:`fedimg.fl.nvflare.crossval`). The same files either way.

>>> import tempfile
>>> res = {"global": {"site-1": {"accuracy": 0.75}, "site-2": {"accuracy": 0.5}}}
>>> out = write_crossval(tempfile.mkdtemp(), res, ["site-1", "site-2"], "accuracy", plot=False)
>>> open(out["csv"]).read().splitlines()
['model,site-1,site-2,mean', 'global,0.7500,0.5000,0.6250']
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.io import atomic_path, write_bytes, write_json

__all__ = ["write_crossval", "heatmap"]

log = logging.getLogger(__name__)


def write_crossval(out: str | Path, results: dict[str, dict[str, dict[str, float]]], sites: list[str], key: str, *,
                   plot: bool = True) -> dict[str, Any]:
    """Write the table (JSON + CSV) and the heatmap of ``results`` into ``out``; a missing cell is NaN."""
    out = Path(out)
    models = list(results)
    values = np.array([[float(results[m].get(s, {}).get(key, np.nan)) for s in sites] for m in models], float)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", *sites, "mean"])
    for name, row in zip(models, values):
        mean = float(np.nanmean(row)) if np.isfinite(row).any() else float("nan")
        w.writerow([name, *[f"{x:.4f}" for x in row], f"{mean:.4f}"])
    write_bytes(out / "crossval.csv", buf.getvalue().encode())
    write_json(out / "crossval.json", {"key_metric": key, "sites": list(sites), "results": results})
    if plot:
        heatmap(values, models, list(sites), key, out / "heatmap.png")
    return {"csv": str(out / "crossval.csv"), "results": results, "key_metric": key}


def heatmap(values: np.ndarray, rows: list[str], cols: list[str], label: str, path: str | Path) -> Path:
    """A models x sites heatmap PNG with the values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = values[np.isfinite(values)] if values.size else values
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.2 + 0.5 * len(rows)))
    im = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=max(1.0, float(finite.max()) if finite.size else 1.0))
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated on site")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", color="w" if values[i, j] < 0.6 else "k")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(f"cross-site validation ({label})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)

"""Tile labels from annotations: GeoJSON / QuPath polygon exports, or a CSV of points.

GeoJSON: a ``FeatureCollection`` (or a bare list of features, as QuPath exports) of
``Polygon``/``MultiPolygon`` features in level-0 pixel coordinates; the class is
``properties.classification.name`` (QuPath), else ``properties.label``, ``class`` or
``name``. A tile takes the class of the polygon containing its centre (holes respected;
later features win). CSV: columns ``x``, ``y``, ``label`` (level-0 pixels); a tile takes
the label of a point inside it. Tiles with no annotation get ``default`` (None → -1,
unlabeled). Class names map to ids in sorted order, or to their value when all names are
integers.

>>> ann = Annotations(shapes=[("tumour", [[(0, 0), (100, 0), (100, 100), (0, 100)]])], points=[])
>>> label_tiles(ann, np.array([0, 200]), np.array([0, 0]), 50)
(array([ 0, -1]), ['tumour'])
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedimg.errors import InputError

__all__ = ["Annotations", "load_annotations", "label_tiles"]

log = logging.getLogger(__name__)

Ring = list[tuple[float, float]]


@dataclass(frozen=True)
class Annotations:
    """Polygons ``(class, [exterior, *holes])`` and points ``(x, y, class)``."""

    shapes: list[tuple[str, list[Ring]]]
    points: list[tuple[float, float, str]]

    @property
    def classes(self) -> list[str]:
        return sorted({c for c, _ in self.shapes} | {c for *_, c in self.points})


def _feature_class(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name") is not None:
        return str(cls["name"])
    for key in ("label", "class", "classification", "name"):
        if props.get(key) is not None and not isinstance(props[key], dict):
            return str(props[key])
    return None


def load_annotations(path: str | Path) -> Annotations:
    """Read a ``.geojson``/``.json`` polygon file or a ``.csv`` of labelled points."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist; check the --labels path")
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid GeoJSON ({exc}); export polygons from QuPath as GeoJSON") from None
    feats = doc if isinstance(doc, list) else doc.get("features", [doc] if doc.get("type") == "Feature" else None)
    if feats is None:
        raise InputError(path, "has no 'features'; expected a GeoJSON FeatureCollection of polygons")
    shapes: list[tuple[str, list[Ring]]] = []
    for i, feat in enumerate(feats):
        geom = (feat or {}).get("geometry") or {}
        cls = _feature_class(feat.get("properties") or {})
        if cls is None:
            raise InputError(path, f"feature {i} has no class (properties.classification.name or label); name every annotation's class")
        kind, coords = geom.get("type"), geom.get("coordinates")
        try:
            polys = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else None
            if polys is None:
                log.warning("%s: feature %d is a %s, not a polygon; skipped", path, i, kind)
                continue
            for poly in polys:
                rings = [[(float(p[0]), float(p[1])) for p in ring] for ring in poly]
                if not rings or len(rings[0]) < 3:
                    raise ValueError("polygon with fewer than 3 points")
                shapes.append((cls, rings))
        except (TypeError, ValueError, IndexError) as exc:
            raise InputError(path, f"feature {i} has malformed coordinates ({exc}); fix or re-export the annotation") from None
    if not shapes:
        raise InputError(path, "contains no polygon annotations")
    return Annotations(shapes=shapes, points=[])


def _load_csv(path: Path) -> Annotations:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"x", "y", "label"}
        if not reader.fieldnames or not need <= {f.strip().lower() for f in reader.fieldnames}:
            raise InputError(path, f"needs columns x, y, label (level-0 pixels); found {reader.fieldnames}")
        points = []
        for n, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            try:
                points.append((float(row["x"]), float(row["y"]), row["label"]))
            except ValueError:
                raise InputError(path, f"line {n}: x/y must be numbers, got {row['x']!r}, {row['y']!r}") from None
    if not points:
        raise InputError(path, "has no rows")
    return Annotations(shapes=[], points=points)


def _class_ids(names: list[str]) -> tuple[dict[str, int], list[str]]:
    try:
        ids = {n: int(n) for n in names}
        if min(ids.values(), default=0) < 0:
            raise ValueError
        ordered = [str(i) for i in range(max(ids.values(), default=-1) + 1)]
        return ids, ordered
    except ValueError:
        return {n: i for i, n in enumerate(names)}, names


def label_tiles(ann: Annotations, xs: np.ndarray, ys: np.ndarray, size0: float, *, default: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Labels ``(N,)`` (int, -1 unlabeled) for tiles with level-0 top-left ``xs, ys`` and side ``size0``."""
    from matplotlib.path import Path as MplPath

    names = ann.classes + ([default] if default is not None and default not in ann.classes else [])
    ids, ordered = _class_ids(sorted(names))
    out = np.full(len(xs), -1 if default is None else ids[default], np.int64)
    centres = np.stack([np.asarray(xs, float) + size0 / 2, np.asarray(ys, float) + size0 / 2], axis=1)
    for cls, rings in ann.shapes:
        inside = MplPath(rings[0]).contains_points(centres)
        for hole in rings[1:]:
            inside &= ~MplPath(hole).contains_points(centres)
        out[inside] = ids[cls]
    for px, py, cls in ann.points:
        hit = (xs <= px) & (px < xs + size0) & (ys <= py) & (py < ys + size0)
        out[hit] = ids[cls]
    return out, ordered

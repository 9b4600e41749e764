"""The template's mid-sagittal plane and its placement in a subject (QC's second mid-plane estimate).

QC's ``face_centred`` check measures how far the removed tissue's centre lies from the head's
mid-plane. The image's own brain estimate gives one plane (:func:`.brainmask.head_frame`); the
template brain's plane carried into the subject by a head-outline placement (independent of the
MI registration QC checks) gives the other (:func:`placed_frame`).

>>> import numpy as np
>>> centre, normal, anterior = placed_frame(np.eye(4))
>>> bool(abs(normal[0]) > 0.9 and anterior[1] > 0.9)
True
"""

from __future__ import annotations

import functools
import logging

import numpy as np

__all__ = ["template_midplane", "placed_frame"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def template_midplane() -> tuple[np.ndarray, np.ndarray]:
    """The template brain's mid-sagittal plane (centre, unit normal) in template world mm."""
    from .brainmask import head_frame
    from .template import load_template

    from .template_cache import cached

    def build() -> dict[str, np.ndarray]:
        t = load_template()
        centre, normal, _ = head_frame(t.brain > 0.5, t.affine)
        return {"centre": np.asarray(centre), "normal": np.asarray(normal)}

    got = cached("midplane", build, {"centre": ((3,), "float64"), "normal": ((3,), "float64")})  # with a cache folder set
    return got["centre"], got["normal"]


def placed_frame(subject_to_template: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template brain's centre, mid-plane normal and anterior axis (template +y) in subject world mm."""
    c_t, n_t = template_midplane()
    lin = np.asarray(subject_to_template, dtype=np.float64)[:3, :3]
    normal = lin.T @ n_t
    normal /= np.linalg.norm(normal)
    ant = np.linalg.solve(lin, np.array([0.0, 1.0, 0.0]))
    ant -= (ant @ normal) * normal
    return np.linalg.solve(lin, c_t - subject_to_template[:3, 3]), normal, ant / np.linalg.norm(ant)

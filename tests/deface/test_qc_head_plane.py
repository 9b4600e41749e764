"""``qc._with_head_plane`` keeps the distance map and frame QC's threads cached, and they equal the
ones a fresh estimate computes (QC's main thread no longer recomputes them after the plane is set)."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedimg.deface.brainmask import BrainEstimate, removal_metrics
from fedimg.deface.qc import _with_head_plane


def _estimate() -> BrainEstimate:
    rng = np.random.default_rng(541)
    zz, yy, xx = np.mgrid[:40, :44, :36]
    head = ((zz - 20) / 18.0) ** 2 + ((yy - 22) / 20.0) ** 2 + ((xx - 18) / 16.0) ** 2 < 1
    brain = head & (((zz - 20) / 12.0) ** 2 + ((yy - 20) / 13.0) ** 2 + ((xx - 18) / 10.0) ** 2 < 1)
    brain &= rng.random(brain.shape) < 0.98
    return BrainEstimate(head=head, brain=brain, step=(2, 2, 2), cell_ml=0.008, cell_spacing=np.array([2.0, 2.0, 2.0]),
                         cell_affine=np.diag([2.0, 2.0, 2.0, 1.0]), reference=1.0)


def test_with_head_plane_keeps_the_cached_values_and_they_are_the_fresh_ones():
    est = _estimate()
    dist, near, frame = est.brain_distance, est.head_brain_distance, est.frame  # cached, as the pipeline's QC thread does
    plane = (np.array([36.0, 40.0, 40.0]), np.array([1.0, 0.0, 0.0]))
    kept = _with_head_plane(est, plane)
    assert kept.head_plane is plane and kept.brain_distance is dist and kept.frame is frame
    assert kept.head_brain_distance is near
    fresh = dataclasses.replace(est, head_plane=plane)  # recomputes all three
    assert np.array_equal(fresh.brain_distance, kept.brain_distance)
    assert np.array_equal(fresh.head_brain_distance, kept.head_brain_distance)
    for a, b in zip(fresh.frame, kept.frame):
        assert np.array_equal(a, b)
    remove = np.zeros((80, 88, 72), bool)
    remove[50:, 60:, 20:50] = True
    assert removal_metrics(None, np.eye(4), remove, estimate=kept) == removal_metrics(None, np.eye(4), remove, estimate=fresh)


def test_with_head_plane_before_any_cache_computes_later():
    est = _estimate()
    kept = _with_head_plane(est, None)
    assert "brain_distance" not in kept.__dict__ and "frame" not in kept.__dict__
    assert np.array_equal(kept.brain_distance, est.brain_distance)

"""Synthetic multi-site tile sets: marked as synthetic, a different label mix and stain per site."""

from __future__ import annotations

import numpy as np

from fedimg.pathology.store import load_tile_set


def test_synthetic_sites_are_marked_and_differ(synth_sites):
    readme = (synth_sites[0].parent / "README.md").read_text()
    assert "synthetic" in readme.lower()
    a, b = (load_tile_set(s) for s in synth_sites)
    assert a.meta["synthetic"] is True and set(np.unique(a.y)) == {0, 1}
    assert a.x.shape == (96, 32, 32, 3)
    assert abs(a.y.mean() - b.y.mean()) > 0.1  # different label mix per site
    assert np.abs(a.x.reshape(-1, 3).mean(0) - b.x.reshape(-1, 3).mean(0)).max() > 2  # stain shift

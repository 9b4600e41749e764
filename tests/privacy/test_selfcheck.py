"""A site's screen of its own update before encryption (fedimg.privacy.selfcheck)."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.privacy import UpdateCheckError, check_own_update

G = {"w": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32), "n": np.array(5, np.int64)}


def _upd(scale=0.1):
    return {"w": np.full((3, 4), scale, np.float32), "b": np.full(4, scale, np.float32), "n": np.array(0, np.int64)}


def test_good_update_passes_with_its_norm():
    out = check_own_update(_upd(0.1), G, num_samples=10)
    assert out["norm"] == pytest.approx(0.4, abs=1e-6)  # sqrt(16 * 0.01); the int buffer is not counted
    assert out["global_norm"] == pytest.approx(np.sqrt(12)) and out["rel_norm"] == pytest.approx(0.4 / np.sqrt(12))


@pytest.mark.parametrize("bad, match", [
    (lambda u: {**u, "w": np.where(np.eye(3, 4, dtype=bool), np.nan, u["w"]).astype(np.float32)}, "'w' holds NaN or Inf"),
    (lambda u: {**u, "b": np.full(4, np.inf, np.float32)}, "'b' holds NaN or Inf"),
    (lambda u: {**u, "w": np.zeros((4, 3), np.float32)}, r"'w' has shape \(4, 3\)"),
    (lambda u: {**u, "extra": np.zeros(1, np.float32)}, r"extra \['extra'\]"),
    (lambda u: {k: v for k, v in u.items() if k != "b"}, r"missing \['b'\]"),
    (lambda u: {k: v * 100 for k, v in u.items()}, r"limit 10x"),
])
def test_bad_updates_are_not_sent(bad, match):
    with pytest.raises(UpdateCheckError, match=match):
        check_own_update(bad(_upd()), G, num_samples=10)


def test_sample_count_and_disabled_rules():
    for n in (0, -3, 10**9, 2.5):
        with pytest.raises(UpdateCheckError, match="sample count"):
            check_own_update(_upd(), G, num_samples=n)
    big = {k: v * 100 for k, v in _upd().items()}
    assert check_own_update(big, G, num_samples=10**9, max_rel_norm=0, max_samples=0)["rel_norm"] > 10


def test_torch_tensors_are_screened_too():
    torch = pytest.importorskip("torch")
    upd = {k: torch.as_tensor(v) for k, v in _upd().items()}
    upd["w"][0, 0] = float("nan")
    with pytest.raises(UpdateCheckError, match="NaN"):
        check_own_update(upd, {k: torch.as_tensor(v) for k, v in G.items()}, num_samples=3)

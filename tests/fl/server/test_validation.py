"""Update validation: every rejection reason, and acceptance of normal updates."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.validation import UpdateValidator, ValidationConfig

GLOBAL = {"conv.weight": np.ones((2, 3), np.float32), "conv.bias": np.ones(2, np.float32),
          "bn.num_batches_tracked": np.array(5, np.int64)}


def _update(scale=0.01):
    return {"conv.weight": np.full((2, 3), scale, np.float32), "conv.bias": np.full(2, scale, np.float32),
            "bn.num_batches_tracked": np.array(3, np.int64)}


@pytest.fixture
def validator():
    v = UpdateValidator(ValidationConfig(max_rel_norm=10.0, max_norm_ratio=20.0, min_sites=2))
    v.begin_round(GLOBAL)
    return v


def test_normal_update_is_accepted_with_its_norm(validator):
    verdict = validator.check("site-1", _update())
    assert verdict.ok and verdict.reason is None
    assert verdict.norm == pytest.approx(np.sqrt(8 * 0.01**2 + 9))
    assert verdict.flat.shape == (9,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_is_rejected(validator, bad):
    u = _update()
    u["conv.bias"] = np.array([0.0, bad], np.float32)
    verdict = validator.check("site-2", u)
    assert not verdict.ok and "non-finite" in verdict.reason


def test_scaled_update_is_a_norm_outlier(validator):
    u = {k: (v * 1e6 if v.dtype.kind == "f" else v) for k, v in _update(1.0).items()}
    verdict = validator.check("site-3", u)
    assert not verdict.ok and "norm outlier" in verdict.reason and "global model norm" in verdict.reason


def test_name_shape_dtype_mismatch(validator):
    u = _update()
    del u["conv.bias"]
    u["extra"] = np.zeros(1, np.float32)
    r = validator.check("a", u).reason
    assert "missing tensors conv.bias" in r and "unexpected tensors extra" in r
    u = _update()
    u["conv.weight"] = np.zeros((3, 2), np.float32)
    assert "shape mismatch for conv.weight" in validator.check("b", u).reason
    u = _update()
    u["conv.bias"] = u["conv.bias"].astype(np.float64)
    assert "dtype mismatch for conv.bias" in validator.check("c", u).reason
    assert validator.check("d", {}).reason == "empty update"


def test_outlier_relative_to_last_rounds_median():
    v = UpdateValidator(ValidationConfig(max_rel_norm=0, max_norm_ratio=5.0))
    v.begin_round(None)  # global unknown: the first update's names become the reference
    assert v.check("s1", _update(0.1)).ok and v.check("s2", _update(0.1)).ok
    v.end_round()
    v.begin_round(None)
    assert v.check("s1", _update(0.2)).ok
    verdict = v.check("s2", _update(100.0))
    assert not verdict.ok and "last round's median" in verdict.reason


def test_min_sites(validator):
    assert not validator.enough(1) and validator.enough(2)
    with pytest.raises(ConfigError):
        ValidationConfig(min_sites=0)


def test_screen_then_judge_matches_check(validator):
    screened = validator.screen("site-1", _update())
    assert screened.ok and screened.norm is None and screened.flat is None
    assert [p.size for p in screened.parts] == [6, 2, 1] and screened.parts[-1].dtype == np.float32  # int tail cast
    np.testing.assert_array_equal(np.concatenate(screened.parts), validator.check("site-1", _update()).flat)
    norm = float(np.linalg.norm(np.concatenate(screened.parts).astype(np.float64)))
    judged = validator.judge("site-1", norm)
    assert judged.ok and judged.norm == norm
    assert "non-finite" in validator.judge("site-2", float("nan")).reason
    assert "global model norm" in validator.judge("site-3", 11 * validator.global_norm).reason
    bad = _update()
    bad["conv.bias"] = np.zeros(3, np.float32)
    assert "shape mismatch" in validator.screen("site-4", bad).reason


def test_only_judged_norms_count_for_the_median():
    v = UpdateValidator(ValidationConfig(max_rel_norm=0, max_norm_ratio=5.0))
    v.begin_round(GLOBAL)
    for norm in (1.0, 3.0, float("inf")):
        v.judge("s", norm)
    v.end_round()
    assert v.previous_median == 2.0


def _meta(site="site-1", **extra):
    return {"NUM_STEPS_CURRENT_ROUND": 10, "client_name": site, **extra}


def test_audit_accepts_an_update_stating_the_site_it_came_from(validator):
    assert validator.audit("site-1", {**_meta(), "site": "site-1"}, {}).ok


def test_audit_rejects_an_update_stating_another_site(validator, caplog):
    """NVFlare's simulator once ran site-1's worker as site-2: site-2's data, delivered as site-1's."""
    from fedimg.fl.server.validation import SITE_MISMATCH

    with caplog.at_level("WARNING"):
        verdict = validator.audit("site-1", {**_meta(), "site": "site-2"}, {})
    assert not verdict.ok and verdict.reason.startswith(SITE_MISMATCH)
    assert "'site-2' is not 'site-1'" in verdict.reason and "site-2" in caplog.text


@pytest.mark.parametrize("stated", [None, "", 7, "s" * 129])
def test_audit_requires_a_stated_site(validator, stated):
    meta = _meta() if stated is None else {**_meta(), "site": stated}
    verdict = validator.audit("site-1", meta, {})
    assert not verdict.ok and "does not state its site" in verdict.reason

"""Shared fixtures of the study tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def study_calls(monkeypatch) -> dict:
    """``fedimg study`` through the CLI with ``run_study`` replaced: the returned dict holds the last
    call's keyword arguments plus ``train`` (the FederationConfig's training fields)."""
    import fedimg.study.runner as runner

    seen: dict = {}

    def fake(data, out, fed, proto, **kw):
        seen.clear()
        seen.update(kw, train=dict(fed.train))
        return {"summary": {"arms": {}}}

    monkeypatch.setattr(runner, "run_study", fake)
    return seen


@pytest.fixture
def seed_arms(monkeypatch) -> dict:
    """:func:`fedimg.study.runner.run_seed` with every arm's training replaced: the returned dict holds
    ``fed`` (the federated arm's sites' training fields), ``dp`` (the DP arms') and ``local`` (the
    TrainConfig of each local arm in order: centralised, then each site alone)."""
    import fedimg.study.arms as arms
    import fedimg.study.privacy as privacy

    seen: dict = {"local": []}
    monkeypatch.setattr(arms, "federated_arm", lambda view, out, f, *a, **k: seen.setdefault("fed", dict(f.train)))
    monkeypatch.setattr(arms, "train_local_arm", lambda task, cfg, *a, **k: seen["local"].append(cfg))
    monkeypatch.setattr(arms, "tested_arm", lambda arm, *a, **k: {})

    def dp_arms(sweep, *, fed, **kw):
        seen["dp"] = dict(fed.train)
        return {}

    monkeypatch.setattr(privacy, "run_privacy_arms", dp_arms)
    return seen

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

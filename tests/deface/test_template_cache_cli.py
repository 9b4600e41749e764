"""``fedimg deface`` with no template cache, a cold one and a warm one writes the same bytes and records."""

from __future__ import annotations

import json

import pytest

from fedimg.cli import main
from fedimg.deface import template as tpl
from fedimg.deface import template_cache as tc

VOLATILE = {"seconds", "registration_seconds", "reference", "output", "qc_report", "source"}


def _clear() -> None:
    for fn in (tpl._template_intensity, tpl._load_template, tpl._template_head_mask):
        fn.cache_clear()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_cli_outputs_equal_without_cold_and_warm_cache(tmp_path, assets, monkeypatch, threads):
    head = assets / "mri" / "pycortex_S1_T1w_2mm.nii.gz"
    got = {}
    try:
        for run, cache in (("off", "off"), ("cold", str(tmp_path / "cache")), ("warm", str(tmp_path / "cache"))):
            monkeypatch.setenv("FEDIMG_CACHE_DIR", cache)
            _clear()
            out = tmp_path / run / "head.nii.gz"
            assert main(["-q", "deface", str(head), "-o", str(out), "--no-png", "--threads", threads]) == 0
            records = [json.loads(out.with_name(f"head.{s}.json").read_text()) for s in ("qc", "deface")]
            got[run] = (out.read_bytes(), [{k: v for k, v in r.items() if k not in VOLATILE} for r in records])
            assert (tc.cache_dir() is None) == (cache == "off")
    finally:
        tc.set_cache_dir(None)
        _clear()
    assert any((tmp_path / "cache").iterdir())
    assert got["cold"] == got["off"] and got["warm"] == got["off"]

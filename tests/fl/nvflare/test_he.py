"""Secure aggregation with NVFlare HE (TenSEAL CKKS): ``fedimg poc --he``.

Unit tests use real TenSEAL contexts; one real POC run (server + 2 site processes on
localhost, keys from ``nvflare poc prepare -he``) backs several assertions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

ts = pytest.importorskip("tenseal")


def _context(poly: int = 4096, sizes=(40, 20, 40)):
    """A symmetric CKKS context with relinearisation keys, as NVFlare's HEBuilder provisions (smaller here)."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly, coeff_mod_bit_sizes=list(sizes),
                     encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
    ctx.generate_relin_keys()
    ctx.global_scale = 2**20
    return ctx


def _as_server_sees(vec):
    """A vector as it reaches the server: FOBS ships it with its context's public part."""
    return ts.ckks_vector_from(ts.context_from(vec.context().serialize()), vec.serialize())


def test_server_refuses_what_the_federation_context_did_not_encrypt():
    from fedimg.fl.nvflare.he import context_id, screen_ciphertext

    federation = _context()
    server = ts.context_from(federation.serialize(save_secret_key=False))  # server_context.tenseal
    assert not server.has_secret_key()
    ident = context_id(server)
    names = {"w", "b"}
    good = {k: _as_server_sees(ts.ckks_vector(federation, [0.5, -1.0])) for k in names}
    assert screen_ciphertext(good, "CKKS", names, ident) is None
    assert not any(v.context().has_secret_key() for v in good.values())  # the server cannot decrypt
    with pytest.raises(ValueError):
        good["w"].decrypt()
    # a site without the provisioned context: plain values, or a context of its own
    plain = {k: np.array([0.5, -1.0]) for k in names}
    assert "not a CKKS ciphertext (ndarray)" in screen_ciphertext(plain, "CKKS", names, ident)
    assert "not encrypted with CKKS" in screen_ciphertext(plain, None, names, ident)
    own = {k: _as_server_sees(ts.ckks_vector(_context(8192, (60, 40, 40)), [0.5, -1.0])) for k in names}
    assert "another HE context than the federation's" in screen_ciphertext(own, "CKKS", names, ident)
    assert "names differ" in screen_ciphertext({"w": good["w"]}, "CKKS", names, ident)
    # the server adds ciphertexts; only a holder of the secret key reads the sum
    total = good["w"] * 3.0 + good["b"]
    assert np.allclose(ts.ckks_vector_from(federation, total.serialize()).decrypt(), [2.0, -4.0], atol=0.1)  # CKKS is approximate (2^20 scale here)


def test_he_config_errors(tmp_path):
    from fedimg.errors import ConfigError
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.server.strategy_config import StrategyConfig

    with pytest.raises(ConfigError, match="FedAvg of differences only"):
        FederationConfig(task="toy", he=True, strategy=StrategyConfig(name="fedadam", server_lr=0.1))
    with pytest.raises(ConfigError, match="--client-dp"):
        FederationConfig(task="toy", he=True, client_dp={"noise_multiplier": 1.0, "clip": 1.0})
    with pytest.raises(ConfigError, match="send"):
        FederationConfig(task="toy", he=True, send="full")


def test_simulate_he_is_one_clear_error(tmp_path, capsys):
    from fedimg.cli import main
    from fedimg.tasks.toy import make_sites

    make_sites(tmp_path / "data", n_sites=2, n=16, seed=1)
    rc = main(["simulate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--task", "toy",
               "--rounds", "1", "--he"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fedimg poc --he" in err[0] and "refuses the simulator" in err[0]
    assert not (tmp_path / "run" / "nvflare").exists()


def test_he_job_wires_encryption_at_every_site(tmp_path):
    from fedimg.fl.nvflare.he import build_he_recipe
    from fedimg.fl.server.federation import FederationConfig

    sites = {"site-1": tmp_path / "a", "site-2": tmp_path / "b"}
    recipe = build_he_recipe(FederationConfig(task="toy", rounds=2, he=True), sites, run_dir=tmp_path / "run")
    recipe.export(str(tmp_path / "job"))
    job = tmp_path / "job" / recipe.name
    server = json.loads(next(job.glob("app_server/config/config_fed_server.json")).read_text())
    paths = {c["path"] for c in server["components"]}
    assert "fedimg.fl.nvflare.he.FedimgHEAggregator" in paths
    assert "nvflare.app_opt.he.model_shareable_generator.HEModelShareableGenerator" in paths
    for site in sites:
        client = json.loads((job / f"app_{site}" / "config" / "config_fed_client.json").read_text())
        out_filters = [f["path"] for flt in client["task_result_filters"] for f in flt["filters"]]
        in_filters = [f["path"] for flt in client["task_data_filters"] for f in flt["filters"]]
        assert out_filters == ["nvflare.app_opt.he.model_encryptor.HEModelEncryptor"]
        assert in_filters == ["nvflare.app_opt.he.model_decryptor.HEModelDecryptor"]
        cc = json.loads((job / f"app_{site}" / "custom" / "fedimg_client.json").read_text())
        assert cc["he"] is True and cc["max_rel_norm"] == 10.0


@pytest.mark.slow
@pytest.mark.nvflare
def test_poc_he_run_aggregates_only_ciphertexts(tmp_path, capsys):
    """One real POC run: 2 rounds complete; the aggregator saw only CKKS vectors without a secret
    key, made with the federation's context; sites screened their own updates; no plain model on the server."""
    from fedimg.cli import main
    from fedimg.fl.server.state import read_metrics
    from fedimg.tasks.toy import make_sites

    make_sites(tmp_path / "data", n_sites=2, n=32, seed=2)
    run = tmp_path / "run"
    rc = main(["poc", "--data", str(tmp_path / "data"), "--out", str(run), "--task", "toy", "--rounds", "2",
               "--he", "--no-progress"])
    assert rc == 0
    audit = [json.loads(line) for line in (run / "he_audit.jsonl").read_text().splitlines()]
    assert sorted((a["round"], a["site"]) for a in audit) == [(1, "site-1"), (1, "site-2"), (2, "site-1"), (2, "site-2")]
    for a in audit:
        assert a["accepted"] and a["value_types"] == ["CKKSVector"] and a["algorithm"] == "CKKS"
        assert a["data_kind"].endswith("WEIGHT_DIFF") and a["context_has_secret_key"] is False
        assert a["context_checked"] is True and a["bytes"] > 10_000
    metrics = read_metrics(run)
    assert [m["round"] for m in metrics] == [1, 2] and all(m["he"]["encrypted"] for m in metrics)
    assert "NaN/Inf in an update" in metrics[-1]["he"]["server_checks_off"]
    assert np.isfinite(metrics[-1]["validation"]["loss"])  # sites decrypted round 1's encrypted global model
    assert not (run / "rounds").exists() and not (run / "global_model.safetensors").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["he"]["server_checks_off"]
    logs = "\n".join(p.read_text() for p in (run / "nvflare").rglob("log.txt"))
    assert logs.count("own update screened before encryption") >= 4
    assert "server-side checks off: NaN/Inf" in capsys.readouterr().out


def test_client_screens_its_own_update_only_under_he():
    import torch

    from fedimg.fl.nvflare.client import ClientConfig, _outgoing
    from fedimg.privacy import UpdateCheckError

    g = {"w": torch.ones(2, 3)}
    nan = lambda p: {k: v * float("nan") for k, v in p.items()}  # noqa: E731 - a site whose training diverged
    meta = {"NUM_STEPS_CURRENT_ROUND": 8}
    plain = ClientConfig(task="toy")
    assert torch.isnan(_outgoing(plain, {"w": torch.zeros(2, 3)}, g, meta, nan, "site-1 round 1")["w"]).all()
    he = ClientConfig(task="toy", he=True, max_rel_norm=10.0, max_samples=1e7)
    ok = _outgoing(he, {"w": torch.full((2, 3), 0.1)}, g, meta, None, "site-1 round 1")
    assert torch.equal(ok["w"], torch.full((2, 3), 0.1))
    with pytest.raises(UpdateCheckError, match="NaN"):
        _outgoing(he, {"w": torch.zeros(2, 3)}, g, meta, nan, "site-1 round 1")
    with pytest.raises(UpdateCheckError, match="limit 10x"):
        _outgoing(he, {"w": torch.full((2, 3), 50.0)}, g, meta, None, "site-1 round 1")

"""HE beyond ``fedimg poc --he``: startup kits with NVFlare's HE builder (``fedimg provision
--he``) and an exported job with the HE filters (``fedimg export-job --he``)."""

from __future__ import annotations

import json

import pytest

from fedimg.cli import main

pytestmark = pytest.mark.nvflare


def test_provision_he_kits_carry_the_tenseal_contexts(tmp_path, hashed):
    import tenseal as ts

    from fedimg.fl.nvflare.provision import provision, sample_project

    project = sample_project(tmp_path / "project.yml", sites=["site-a", "site-b"], server="localhost")
    check = hashed(project)
    kits = provision(project, tmp_path / "kits", he=True)
    check.assert_unchanged()  # the HE builder went into a scratch copy
    server = ts.context_from((kits["localhost"] / "startup" / "server_context.tenseal").read_bytes())
    assert not server.has_secret_key()
    clients = [(kits[s] / "startup" / "client_context.tenseal").read_bytes() for s in ("site-a", "site-b")]
    assert clients[0] == clients[1] and ts.context_from(clients[0]).has_secret_key()  # one key shared by the sites
    # a site's ciphertext adds up under the server's context, and only a site can read the sum
    a = ts.ckks_vector(ts.context_from(clients[0]), [1.0, 2.0])
    b = ts.ckks_vector(ts.context_from(clients[1]), [0.5, 0.5])
    total = ts.ckks_vector_from(server, (a + b).serialize())
    with pytest.raises(ValueError):
        total.decrypt()  # the server cannot decrypt
    back = ts.ckks_vector_from(ts.context_from(clients[0]), total.serialize()).decrypt()
    assert back == pytest.approx([1.5, 2.5], abs=1e-3)
    assert "client_context.tenseal" in (kits["site-a"].parent / "README-fedimg.md").read_text()


def test_export_job_he_wires_the_filters(tmp_path):
    out = tmp_path / "job"
    rc = main(["export-job", "--out", str(out), "--sites", "site-1", "site-2", "--task", "toy", "--rounds", "2",
               "--he"])
    assert rc == 0
    server = json.loads((out / "app_server" / "config" / "config_fed_server.json").read_text())
    comps = {c["path"]: c.get("args", {}) for c in server["components"]}
    agg = comps["fedimg.fl.nvflare.he.FedimgHEAggregator"]
    # the provisioned server_context.tenseal (the default) and the server's own job workspace: no path of this machine
    assert agg.get("tenseal_context_file", "server_context.tenseal") == "server_context.tenseal"
    assert agg.get("run_dir", "") == "" and str(tmp_path) not in json.dumps(server)
    assert "nvflare.app_opt.he.model_shareable_generator.HEModelShareableGenerator" in comps
    for site in ("site-1", "site-2"):
        client = json.loads((out / f"app_{site}" / "config" / "config_fed_client.json").read_text())
        outf = [f["path"] for flt in client["task_result_filters"] for f in flt["filters"]]
        inf = [f["path"] for flt in client["task_data_filters"] for f in flt["filters"]]
        assert outf == ["nvflare.app_opt.he.model_encryptor.HEModelEncryptor"]
        assert inf == ["nvflare.app_opt.he.model_decryptor.HEModelDecryptor"]
        cc = json.loads((out / f"app_{site}" / "custom" / "fedimg_client.json").read_text())
        assert cc["he"] is True
    assert "CrossSiteModelEval" not in (out / "app_server" / "config" / "config_fed_server.json").read_text()


@pytest.mark.parametrize("extra, words", [
    (["--crossval", "all"], "with --he use --crossval off"),
    (["--client-dp"], "--he runs FedAvg of differences only"),
])
def test_export_job_he_refusals(tmp_path, capsys, extra, words):
    rc = main(["export-job", "--out", str(tmp_path / "job"), "--task", "toy", "--he", *extra])
    assert rc != 0 and words in capsys.readouterr().err
    assert not (tmp_path / "job").exists()

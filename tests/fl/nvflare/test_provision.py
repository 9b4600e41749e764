"""fedimg provision: real nvflare provisioning into startup kits that allow fedimg's components."""

from __future__ import annotations

import json

import pytest

from fedimg.errors import InputError


@pytest.mark.nvflare
def test_provision_kits_with_certificates_and_allow_list(tmp_path, hashed):
    from fedimg.fl.nvflare.provision import provision, sample_project

    project = sample_project(tmp_path / "project.yml", sites=["site-a", "site-b"], server="localhost")
    check = hashed(project)
    kits = provision(project, tmp_path / "kits")
    check.assert_unchanged()
    assert set(kits) == {"localhost", "site-a", "site-b", "admin@hospital.org"}
    for site in ("site-a", "site-b"):
        startup = kits[site] / "startup"
        assert {"client.crt", "client.key", "rootCA.pem"} <= {p.name for p in startup.iterdir()}
        res = json.loads((kits[site] / "local" / "resources.json.default").read_text())
        assert "fedimg.fl." in res["class_allow_list"]
    assert (kits["localhost"] / "startup" / "server.crt").is_file()
    with pytest.raises(InputError, match="not empty"):
        provision(project, tmp_path / "kits")
    with pytest.raises(InputError, match="does not exist"):
        provision(tmp_path / "missing.yml", tmp_path / "kits2")

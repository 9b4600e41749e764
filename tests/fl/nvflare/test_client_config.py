"""A site's client config is bound to its site: the client refuses to run as another site."""

from __future__ import annotations

import pytest

from fedimg.errors import ConfigError
from fedimg.fl.nvflare.client_config import CONFIG_NAME, ClientConfig


def test_check_site_accepts_its_own_site_and_refuses_another(tmp_path):
    cc = ClientConfig(task="toy", data="/data/site-1", site="site-1")
    cc.check_site("site-1")
    with pytest.raises(ConfigError, match=r"cfg.json: this client config was written for site-1 \(data /data/site-1\)"
                                          r", but NVFlare runs this process as site-2"):
        cc.check_site("site-2", tmp_path / "cfg.json")
    ClientConfig(task="toy").check_site("any-site")  # a file not bound to a site (older exports): any name


def test_each_site_file_names_its_site(tmp_path):
    from fedimg.fl.nvflare.job import client_configs
    from fedimg.fl.server.federation import FederationConfig

    sites = {"site-1": tmp_path / "a", "site-2": tmp_path / "b"}
    ccs = client_configs(FederationConfig(task="toy", rounds=1), sites, {"features": 8})
    assert {name: (cc.site, cc.data) for name, cc in ccs.items()} == {n: (n, str(p)) for n, p in sites.items()}


def test_the_client_will_not_train_another_sites_data_under_its_name(tmp_path, monkeypatch):
    """NVFlare runs this process as site-2 but it found site-1's config: it stops before loading any data."""
    nvclient = pytest.importorskip("nvflare.client")
    from fedimg.fl.nvflare import client

    path = ClientConfig(task="toy", task_config={"features": 8}, data=str(tmp_path / "missing"), site="site-1").write(
        tmp_path / CONFIG_NAME)
    monkeypatch.setattr(nvclient, "init", lambda **kw: None)
    monkeypatch.setattr(nvclient, "get_site_name", lambda: "site-2")
    with pytest.raises(ConfigError, match="written for site-1.*runs this process as site-2"):
        client.main(["--config", str(path)])

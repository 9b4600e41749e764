"""Reliability on a real NVFlare POC system (server + 3 site processes, gRPC + mutual TLS, localhost only).

One POC system is shared by the module (start ~30 s) and always stopped. Order matters:
the dropout test kills site-2, so it runs last.
"""

from __future__ import annotations

import json
import socket
import ssl
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.nvflare]

SITES = ["site-1", "site-2", "site-3"]
NAN_CLIENT = """
import sys
from fedimg.fl.nvflare.client import main
sys.exit(main(update_hook=lambda p: {k: v * float("nan") if v.is_floating_point() else v for k, v in p.items()}))
"""


@pytest.fixture(scope="module")
def poc(tmp_path_factory):
    from fedimg.fl.nvflare.poc import PocSystem
    from fedimg.tasks.toy import make_sites

    tmp = tmp_path_factory.mktemp("poc")
    make_sites(tmp / "data", n_sites=3, n=48, seed=2)
    system = PocSystem(tmp / "ws", SITES, heartbeat_timeout=25)
    mp = pytest.MonkeyPatch()
    mp.setenv("NVFLARE_DEAD_CLIENT_CHECK_LEAD_TIME", "5")  # react to a dead site within seconds, not minutes
    mp.setenv("NVFLARE_DEAD_CLIENT_GRACE_PERIOD", "2")
    try:
        system.prepare()
        system.start()
        yield system, tmp
    finally:
        system.stop()
        mp.undo()


def _sites(tmp: Path) -> dict[str, Path]:
    return {s: (tmp / "data" / s).resolve() for s in SITES}


def _rounds(run: Path) -> list[int]:
    from fedimg.fl.server.state import read_metrics

    try:
        return [m["round"] for m in read_metrics(run)]
    except Exception:
        return []


def _tls_probe(cafile: Path, cert: tuple[Path, Path] | None) -> bool:
    """True if the server keeps a TLS connection open for this client certificate (localhost only)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with socket.create_connection(("127.0.0.1", 8002), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                s.settimeout(3)
                try:
                    data = s.recv(1)  # a gRPC server greets with HTTP/2 SETTINGS or waits for us
                except socket.timeout:
                    return True
                return data != b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return False


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    c, k = tmp / "rogue.crt", tmp / "rogue.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()))
    return c, k


def test_site_without_valid_certificate_is_refused(poc):
    system, tmp = poc
    kit = system.participant_dir("site-1") / "startup"
    ca = kit / "rootCA.pem"
    assert _tls_probe(ca, (kit / "client.crt", kit / "client.key"))  # the provisioned site's certificate works
    assert not _tls_probe(ca, None)  # no certificate: refused
    assert not _tls_probe(ca, _self_signed(tmp))  # a certificate not signed by the project's CA: refused


def test_poisoned_site_rejected_then_server_restart_resumes(poc):
    from fedimg.fl.nvflare.job import build_recipe
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.server.state import load_params, load_latest, read_metrics, round_path

    system, tmp = poc
    run = tmp / "run-restart"
    bad = tmp / "nan_client.py"
    bad.write_text(textwrap.dedent(NAN_CLIENT))
    cfg = FederationConfig(task="toy", rounds=4, local_epochs=1, train={"features": 8}, min_sites=2)
    recipe = build_recipe(cfg, _sites(tmp), run_dir=run, site_scripts={"site-3": str(bad)}, tracking=False)
    job = system.submit(recipe)
    system.wait(job, timeout=300, until=lambda: len(_rounds(run)) >= 2)
    assert len(_rounds(run)) >= 2
    # the server dies mid-run and comes back
    assert system.kill("server") >= 1
    time.sleep(3)
    system.start("server")
    done, _, _ = load_latest(run)
    assert 2 <= done < 4
    recipe = build_recipe(cfg, _sites(tmp), run_dir=run, start_round=done, checkpoint=round_path(run, done), tracking=False)
    job2 = system.submit(recipe)
    status = system.wait(job2, timeout=300)
    assert status.upper().endswith("COMPLETED"), status
    metrics = read_metrics(run)
    assert [m["round"] for m in metrics] == [1, 2, 3, 4]
    first = metrics[0]
    assert sorted(first["accepted"]) == ["site-1", "site-2"]
    assert first["rejected"][0]["site"] == "site-3" and "non-finite" in first["rejected"][0]["reason"]
    assert metrics[done]["validation"]["model_round"] == done and metrics[done]["rejected"] == []
    params, _ = load_params(run / "global_model.safetensors")
    assert all(np.isfinite(v).all() for v in params.values())
    # what the sites sent: weights, sample counts and float metrics only; no paths of their data
    data_root = str((tmp / "data").resolve())
    for line in (run / "payloads.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert set(rec["params"]) == {"0.weight", "0.bias"}
        assert all(t[0] == "float" for t in rec["metrics"].values())
        assert set(rec["meta"]) <= {"NUM_STEPS_CURRENT_ROUND", "client_name", "initial_metrics", "props"}
        assert data_root not in line and "toy.npz" not in line


def test_killed_site_mid_round_run_completes_with_others(poc):
    from fedimg.fl.nvflare.job import build_recipe
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.server.state import read_metrics

    system, tmp = poc
    run = tmp / "run-dropout"
    cfg = FederationConfig(task="toy", rounds=3, local_epochs=1, train={"features": 8}, min_sites=2)
    job = system.submit(build_recipe(cfg, _sites(tmp), run_dir=run, tracking=False))
    # kill site-2 while round 2 is in flight (its task has just been sent)
    system.wait(job, timeout=300, until=lambda: len(_rounds(run)) >= 1)
    assert system.kill("site-2") >= 1
    status = system.wait(job, timeout=300)
    assert status.upper().endswith("COMPLETED"), status
    metrics = read_metrics(run)
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert sorted(metrics[0]["accepted"]) == SITES
    assert sorted(metrics[-1]["accepted"]) == ["site-1", "site-3"] and not metrics[-1]["skipped"]
    assert all(np.isfinite(m["validation"]["accuracy"]) for m in metrics)

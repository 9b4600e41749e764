"""Startup kits for a real deployment (``fedimg provision``), via ``nvflare provision``.

NVFlare's provisioning tool reads a ``project.yml`` (server, sites, admins) and writes one
startup kit per participant: certificates signed by the project's root CA (mutual TLS),
the server address and start scripts. fedimg then lets each participant run fedimg's job
components (``fedimg.fl.`` added to ``local/resources.json.default`` ``class_allow_list``)
and writes a short README for the hospitals. :func:`sample_project` writes a starting
``project.yml`` for a server and N sites.

With ``he=True`` (``fedimg provision --he``) NVFlare's ``HEBuilder`` (TenSEAL CKKS, as in
NVFlare's HE docs) joins the project's builders before signing: the server's kit gets
``startup/server_context.tenseal`` (no secret key) and every site's kit
``startup/client_context.tenseal`` (the shared secret key); a job exported with ``fedimg
export-job --he`` finds them there.

Usage (``fedimg provision`` does this)::

    kits = provision("project.yml", "kits/", he=True)

>>> builders = with_he_builder([{"path": "nvflare.lighter.impl.cert.CertBuilder"},
...                             {"path": "nvflare.lighter.impl.signature.SignatureBuilder"}])
>>> [b["path"].rsplit(".", 1)[1] for b in builders]
['CertBuilder', 'HEBuilder', 'SignatureBuilder']
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fedimg.errors import FedimgError, InputError
from fedimg.io import write_bytes

__all__ = ["provision", "sample_project", "with_he_builder", "HE_BUILDER"]

HE_BUILDER = "nvflare.lighter.impl.he.HEBuilder"

log = logging.getLogger(__name__)

_SAMPLE = """\
api_version: 3
name: {name}
description: fedimg federated medical imaging project
participants:
  - name: {server}
    type: server
    org: {org}
    fed_learn_port: 8002
{sites}  - name: admin@{org}.org
    type: admin
    org: {org}
    role: project_admin
builders:
  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder
  - path: nvflare.lighter.impl.static_file.StaticFileBuilder
    args:
      config_folder: config
  - path: nvflare.lighter.impl.cert.CertBuilder
  - path: nvflare.lighter.impl.signature.SignatureBuilder
"""


def sample_project(path: str | Path, *, sites: list[str], server: str = "server1", org: str = "hospital",
                   name: str = "fedimg") -> Path:
    """Write a minimal ``project.yml``: one server, the given sites, one project admin."""
    block = "".join(f"  - name: {s}\n    type: client\n    org: {org}\n" for s in sites)
    write_bytes(path, _SAMPLE.format(name=name, server=server, org=org, sites=block).encode())
    return Path(path)


def with_he_builder(builders: list) -> list:
    """``builders`` with NVFlare's CKKS ``HEBuilder`` before the ``SignatureBuilder`` (so the
    contexts are signed with the kit); unchanged when an HE builder is already there."""
    if any(isinstance(b, dict) and b.get("path") == HE_BUILDER for b in builders):
        return list(builders)
    sig = [i for i, b in enumerate(builders) if isinstance(b, dict) and str(b.get("path", "")).endswith("SignatureBuilder")]
    at = sig[0] if sig else len(builders)
    he = {"path": HE_BUILDER, "args": {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40],
                                       "scale_bits": 40, "scheme": "CKKS"}}
    return [*builders[:at], he, *builders[at:]]


def _he_project(project: Path, dest: Path) -> None:
    """Write ``project`` with the HE builder to ``dest`` (the input stays as it is)."""
    import yaml

    try:
        doc = yaml.safe_load(project.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(project, f"is not a readable project.yml ({exc}); fix it or write one with --sample") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("builders"), list):
        raise InputError(project, "has no builders list; write a project.yml with `fedimg provision --sample`")
    doc["builders"] = with_he_builder(doc["builders"])
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))


def _check_he_kits(out: Path, kits: dict[str, Path]) -> None:
    """Every kit holds its TenSEAL context; the server's has no secret key."""
    import tenseal as ts

    for name, kit in kits.items():
        if "@" in name:
            continue
        server = (kit / "startup" / "fed_server.json").is_file()
        ctx = kit / "startup" / ("server_context.tenseal" if server else "client_context.tenseal")
        if not ctx.is_file():
            raise FedimgError(f"{out}: nvflare provision wrote no {ctx.name} for {name}")
        if server and ts.context_from(ctx.read_bytes()).has_secret_key():
            raise FedimgError(f"{ctx}: the server's HE context holds a secret key; it must not")


def provision(project: str | Path, out: str | Path, *, force: bool = False, he: bool = False) -> dict[str, Path]:
    """Run ``nvflare provision`` on ``project`` into ``out``; returns participant -> startup kit folder.

    ``he``: add NVFlare's ``HEBuilder`` (CKKS contexts in every kit, for ``export-job --he``)."""
    from fedimg.fl.nvflare.simulate import allow_fedimg_components

    project, out = Path(project), Path(out)
    if not project.is_file():
        raise InputError(project, "does not exist; write one with `fedimg provision --sample project.yml --sites ...`")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(out, "is not empty; choose a new --out (or --force to add a new provisioning round)")
    exe = Path(sys.executable).with_name("nvflare")
    with tempfile.TemporaryDirectory() as tmp:
        # nvflare writes <workspace>/<project name>/prod_NN; run in a scratch folder so no input is touched
        if he:
            _he_project(project, Path(tmp) / "project.yml")
        else:
            shutil.copyfile(project, Path(tmp) / "project.yml")
        res = subprocess.run([str(exe) if exe.exists() else "nvflare", "provision", "-p", "project.yml", "-w",
                              str(Path(out).resolve()), "--force"], cwd=tmp, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise InputError(project, f"nvflare provision failed: {(res.stderr or res.stdout).strip()[-600:]}")
    prods = sorted(out.glob("*/prod_*"))
    if not prods:
        raise FedimgError(f"{out}: nvflare provision wrote no startup kits")
    prod = prods[-1]
    kits = {p.name: p for p in sorted(prod.iterdir()) if (p / "startup").is_dir()}
    for name, kit in kits.items():
        if (kit / "local").is_dir() and "@" not in name:
            allow_fedimg_components(kit / "local")
    if he:
        _check_he_kits(out, kits)
    readme = (
        "# fedimg startup kits\n\n"
        f"Provisioned from {project.name}. Send each participant its own folder only (it holds its private key).\n\n"
        "On every site and the server: install fedimg (`pip install fedimg`), then `./startup/start.sh`.\n"
        "Sites: set FEDIMG_SITE_DATA to the defaced data folder, or export the job with "
        "`fedimg export-job --site-data site-1=/path ...`.\n"
        "Admin: `nvflare job submit -j <job folder>` with the admin kit. A job from `fedimg export-job` ends with "
        "cross-site validation: the table and heatmap are in the server's kit folder, "
        "<job id>/fedimg/crossval/ (crossval.csv, heatmap.png).\n\n"
        + ("Homomorphic encryption: every site's startup/ holds client_context.tenseal (the shared secret key: keep "
           "it at the sites), the server's server_context.tenseal (no secret key). Export the job with "
           "`fedimg export-job --he ...`: sites encrypt every update, the server adds ciphertexts only.\n\n"
           if he else "")
        + "Participants: " + ", ".join(kits) + "\n"
    )
    write_bytes(prod / "README-fedimg.md", readme.encode())
    log.info("startup kits for %s in %s", ", ".join(kits), prod)
    return kits

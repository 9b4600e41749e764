"""Startup kits for a real deployment (``fedimg provision``), via ``nvflare provision``.

NVFlare's provisioning tool reads a ``project.yml`` (server, sites, admins) and writes one
startup kit per participant: certificates signed by the project's root CA (mutual TLS),
the server address and start scripts. fedimg then lets each participant run fedimg's job
components (``fedimg.fl.`` added to ``local/resources.json.default`` ``class_allow_list``)
and writes a short README for the hospitals. :func:`sample_project` writes a starting
``project.yml`` for a server and N sites.

Usage (``fedimg provision`` does this)::

    kits = provision("project.yml", "kits/")
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

__all__ = ["provision", "sample_project"]

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


def provision(project: str | Path, out: str | Path, *, force: bool = False) -> dict[str, Path]:
    """Run ``nvflare provision`` on ``project`` into ``out``; returns participant -> startup kit folder."""
    from fedimg.fl.nvflare.simulate import allow_fedimg_components

    project, out = Path(project), Path(out)
    if not project.is_file():
        raise InputError(project, "does not exist; write one with `fedimg provision --sample project.yml --sites ...`")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(out, "is not empty; choose a new --out (or --force to add a new provisioning round)")
    exe = Path(sys.executable).with_name("nvflare")
    with tempfile.TemporaryDirectory() as tmp:
        # nvflare writes <workspace>/<project name>/prod_NN; run in a scratch folder so no input is touched
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
    readme = (
        "# fedimg startup kits\n\n"
        f"Provisioned from {project.name}. Send each participant its own folder only (it holds its private key).\n\n"
        "On every site and the server: install fedimg (`pip install fedimg`), then `./startup/start.sh`.\n"
        "Sites: set FEDIMG_SITE_DATA to the defaced data folder, or export the job with "
        "`fedimg export-job --site-data site-1=/path ...`.\n"
        "Admin: `nvflare job submit -j <job folder>` with the admin kit. A job from `fedimg export-job` ends with "
        "cross-site validation: the table and heatmap are in the server's kit folder, "
        "<job id>/fedimg/crossval/ (crossval.csv, heatmap.png).\n\n"
        "Participants: " + ", ".join(kits) + "\n"
    )
    write_bytes(prod / "README-fedimg.md", readme.encode())
    log.info("startup kits for %s in %s", ", ".join(kits), prod)
    return kits

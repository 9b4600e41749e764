"""One site's client configuration: the JSON file the job ships in the site app's ``custom/`` folder.

:class:`ClientConfig` holds everything the client script (:mod:`fedimg.fl.nvflare.client`) needs;
:func:`find_config` finds the file where NVFlare puts it. ``site`` names the site the job wrote the
file for: the client refuses to train when NVFlare runs it as another site.

>>> cfg = ClientConfig(task="toy", task_config={"features": 8}, data="/data/site 1", site="site-1")
>>> ClientConfig.from_json(cfg.to_json()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedimg.errors import ConfigError, InputError

__all__ = ["CONFIG_NAME", "ClientConfig", "find_config"]

#: File name of a site's :class:`ClientConfig` in its app's ``custom/`` folder.
CONFIG_NAME = "fedimg_client.json"


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Everything one site's client script needs, as one JSON file.

    ``task_config``: the task's config dict (``config_from_dict``). ``threads``: CPU
    threads for this site (0: the library default). ``local_model_dir``: keep this site's
    latest local model there (never sent; empty: do not keep). ``data``: the site's data
    folder on its own machine (empty: ``$FEDIMG_SITE_DATA`` at run time). ``dp``: patient-level
    DP-SGD (a :class:`fedimg.privacy.DPConfig` dict; empty: off); each site seeds its sampling
    and noise from the DP seed and its own name (never the same noise at two sites).
    ``client_clip``: client-level DP's clipping norm C: the update is clipped to it before it
    is sent (0: off). ``he``: the update is encrypted after the client (NVFlare's HE filters), so
    the site screens its own update first (:func:`fedimg.privacy.check_own_update` with the
    server's ``max_rel_norm`` and ``max_samples``) and sends nothing that fails. ``scaffold`` /
    ``local_keys``: SCAFFOLD's control variates, FedBN's site-local entries
    (:mod:`fedimg.fl.nvflare.site_strategy`). ``site``: the site the job wrote this file for (its
    NVFlare name; empty: not bound to a site); the client refuses to run as any other site
    (:meth:`check_site`), so the name it states in its updates is the name of the data it trains.
    """

    task: str = "brats"
    task_config: dict[str, Any] = field(default_factory=dict)
    local_epochs: int = 1
    prox_mu: float = 0.0
    send: str = "diff"
    threads: int = 0
    local_model_dir: str = ""
    data: str = ""
    dp: dict[str, Any] = field(default_factory=dict)
    client_clip: float = 0.0
    he: bool = False
    max_rel_norm: float = 0.0
    max_samples: float = 0.0
    scaffold: bool = False
    local_keys: list[str] = field(default_factory=list)
    site: str = ""

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise ConfigError(f"local_epochs must be >= 1, got {self.local_epochs}")
        if self.prox_mu < 0:
            raise ConfigError(f"prox_mu must be >= 0, got {self.prox_mu}")
        if self.send not in ("diff", "full"):
            raise ConfigError("send must be 'diff' or 'full'")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        if self.dp:
            from fedimg.privacy import DPConfig

            DPConfig.from_dict(self.dp)

    def check_site(self, site: str, path: str | Path = CONFIG_NAME) -> None:
        """Refuse (``ConfigError``) to run as ``site`` (NVFlare's name for this process) a file
        written for another site: that process would train the other site's data under this name."""
        if self.site and site != self.site:
            raise ConfigError(f"{path}: this client config was written for {self.site} (data {self.data or '$FEDIMG_SITE_DATA'}), "
                              f"but NVFlare runs this process as {site}; it will not train {self.site}'s data as {site}. "
                              "Run the job again (NVFlare started the wrong site in this process)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClientConfig:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ConfigError(f"a client config must be a JSON object, got {text[:80]!r}")
        return cls(**d)

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (atomically)."""
        from fedimg.io import write_bytes

        write_bytes(path, self.to_json().encode())
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> ClientConfig:
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, TypeError, ConfigError) as exc:
            raise InputError(path, f"is not a readable fedimg client config ({exc}); export the job again") from None


def find_config(name: str | Path, search: list[str] | None = None) -> Path:
    """The client config file ``name``: as given (absolute, or relative to the working folder),
    else in a folder of ``search`` (default ``sys.path``, last first: NVFlare appends the job
    app's ``custom/`` folder, where the job ships the file, to the job process's path)."""
    path = Path(name)
    if path.is_file():
        return path
    if not path.is_absolute():
        for folder in reversed(sys.path if search is None else search):
            candidate = Path(folder or ".") / path
            if candidate.is_file():
                return candidate
    raise InputError(path, "not found (in the working folder or the job's custom/ folder); export the job again")

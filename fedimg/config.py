"""Settings read from the environment, in one place (the CLI and this module only read it).

Everything else in fedimg takes parameters; code that needs an environment setting calls
one of these functions:

* :func:`site_data_dir_from_env` — ``FEDIMG_SITE_DATA``, a site's data folder when the
  federated job does not name one (exported jobs, provisioned startup kits);
* :func:`max_volume_mb_from_env` — ``FEDIMG_MAX_VOLUME_MB``, the largest volume (MiB) a
  reader accepts from a file's header (:mod:`fedimg.imageio.limits`);
* :func:`child_process_env` — this process's environment plus some variables, for a
  subprocess (e.g. the ``nvflare`` tool).

>>> child_process_env({"A_SETTING": "1"})["A_SETTING"]
'1'
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SITE_DATA_ENV", "MAX_VOLUME_ENV", "site_data_dir_from_env", "max_volume_mb_from_env", "child_process_env",
           "torchrun_rank_from_env"]

#: Environment variable naming a site's data folder when its job does not name one.
SITE_DATA_ENV = "FEDIMG_SITE_DATA"
#: Environment variable overriding the largest volume (MiB) a reader accepts.
MAX_VOLUME_ENV = "FEDIMG_MAX_VOLUME_MB"


def site_data_dir_from_env() -> str | None:
    """``$FEDIMG_SITE_DATA``, or ``None`` when it is unset or empty."""
    return os.environ.get(SITE_DATA_ENV) or None


def max_volume_mb_from_env() -> float | None:
    """``$FEDIMG_MAX_VOLUME_MB`` as a number, or ``None`` when unset or empty."""
    value = os.environ.get(MAX_VOLUME_ENV)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        from fedimg.errors import ConfigError

        raise ConfigError(f"{MAX_VOLUME_ENV}={value!r} is not a number of MiB") from None


def child_process_env(extra: Mapping[str, str] | None = None, *, path_first: str | None = None) -> dict[str, str]:
    """A copy of this process's environment with ``extra`` set and ``path_first`` put in front of ``PATH``."""
    env = dict(os.environ)
    env.update(extra or {})
    if path_first:
        env["PATH"] = path_first + os.pathsep + env.get("PATH", "")
    return env


def torchrun_rank_from_env() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` that torchrun sets for each worker (``(0, 1, 0)`` outside torchrun)."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))

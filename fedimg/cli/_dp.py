"""A local training run's patient-level DP-SGD (``fedimg train``, ``fedimg train-tiles``):
the :class:`fedimg.privacy.PatientDP` from the ``--dp-*`` options (a resumed run keeps its
saved settings) and ``RUN/privacy.json`` with the guarantee as measured.

>>> import argparse
>>> from fedimg.cli._federation import add_dp_arguments
>>> p = argparse.ArgumentParser(); add_dp_arguments(p)
>>> args = p.parse_args(["--dp-epsilon", "8"]); args.resume = False
>>> run_privacy(args, seed=0, epochs=2, out=None).config.epsilon, run_privacy(p.parse_args([]), seed=0, epochs=2, out=None)
(8.0, None)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

__all__ = ["run_privacy", "report_privacy"]

log = logging.getLogger(__name__)


def run_privacy(args: argparse.Namespace, *, seed: int, epochs: int, out: Path | None) -> Any:
    """The run's :class:`fedimg.privacy.PatientDP` (budget over ``epochs``), or ``None`` without ``--dp-*``."""
    from fedimg.cli._federation import dp_from_args
    from fedimg.io import read_json
    from fedimg.privacy import DPConfig, PatientDP

    dp = dp_from_args(args)
    if getattr(args, "resume", False) and out is not None and (out / "privacy.json").is_file():
        saved = read_json(out / "privacy.json")["config"]
        if dp and {k: v for k, v in dp.items() if k != "seed"} != {k: v for k, v in saved.items() if k != "seed"}:
            log.warning("--resume keeps the run's DP settings; ignoring the DP options given")
        dp = saved
    return PatientDP(DPConfig.from_dict({**dp, "seed": seed}), total_epochs=epochs) if dp else None


def report_privacy(privacy: Any, out: Path, unit: str = "training case") -> None:
    """Write ``RUN/privacy.json`` and log the guarantee as measured (``unit``: what one record is)."""
    from fedimg.io import write_json

    m = privacy.metrics()
    statement = (f"patient-level DP-SGD: ({m['dp_epsilon']:.3g}, {m['dp_delta']:g})-DP for each {unit} "
                 f"({privacy.config.accountant.upper()} accountant, Poisson sample rate {m['dp_sample_rate']:.3g}, "
                 f"noise multiplier {m['dp_noise_multiplier']:.3g}, clip {m['dp_max_grad_norm']:g}, "
                 f"{int(m['dp_steps'])} steps)")
    write_json(out / "privacy.json", {"config": privacy.config.to_dict(), "metrics": m, "statement": statement})
    log.info("%s%s", statement, "; budget spent, training stopped" if m["dp_budget_spent"] else "")

"""``fedimg study``'s privacy-utility options: DP arms at a few target epsilons.

    fedimg study --data sites/ --out study/ --dp-epsilon 1 3 8 inf --dp-mode both

>>> import argparse
>>> p = argparse.ArgumentParser(); add_privacy_sweep_arguments(p)
>>> sweep = privacy_sweep_from_args(p.parse_args(["--dp-epsilon", "8", "1", "inf", "--dp-mode", "client"]))
>>> sweep.finite, sweep.modes
((1.0, 8.0), ('client',))
>>> privacy_sweep_from_args(p.parse_args([])) is None
True
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_privacy_sweep_arguments", "privacy_sweep_from_args", "log_privacy_table"]


def add_privacy_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``--dp-epsilon E [E ...]``, ``--dp-mode``, ``--dp-delta``, ``--dp-max-grad-norm``, ``--clip``, ``--dp-accountant``."""
    g = p.add_argument_group("privacy-utility table (federated arms with differential privacy, same split and seeds)")
    g.add_argument("--dp-epsilon", type=float, nargs="+", default=None, metavar="EPS", dest="dp_sweep",
                   help="target epsilons of the DP arms, each for a whole run (inf: the non-private arm, always run); "
                        "e.g. --dp-epsilon 1 3 8 inf")
    g.add_argument("--dp-mode", choices=["sample", "client", "both"], default="both",
                   help="sample: DP-SGD at every site (protects a training case); client: DP-FedAvg, noise on the "
                        "server (protects a whole site); both (default)")
    g.add_argument("--dp-delta", type=float, default=1e-5, help="delta of both modes (default 1e-5)")
    g.add_argument("--dp-max-grad-norm", type=float, default=1.0, help="DP-SGD per-sample clipping norm (default 1)")
    g.add_argument("--clip", type=float, default=0.5, help="client-level clipping norm of a site's update (default 0.5)")
    g.add_argument("--dp-accountant", choices=["rdp", "prv"], default="rdp", help="DP-SGD accountant (default rdp)")


def privacy_sweep_from_args(args: argparse.Namespace) -> Any:
    """A :class:`fedimg.study.privacy.PrivacySweep`, or ``None`` without ``--dp-epsilon``."""
    if not getattr(args, "dp_sweep", None):
        return None
    from fedimg.study.privacy import PrivacySweep

    modes = ("sample", "client") if args.dp_mode == "both" else (args.dp_mode,)
    return PrivacySweep(epsilons=tuple(args.dp_sweep), modes=modes, delta=args.dp_delta,
                        max_grad_norm=args.dp_max_grad_norm, clip=args.clip, accountant=args.dp_accountant)


def log_privacy_table(res: dict, logger: Any) -> None:
    """One log line per row of the study's privacy-utility table (nothing without one)."""
    for r in res.get("privacy_utility", {}).get("rows", []):
        d = r["dice"]
        if r["mode"] == "none":
            logger.info("no DP: test Dice %.3f [%.3f, %.3f]", d["mean"], d["low"], d["high"])
        else:
            logger.info("%s DP, target epsilon %g (spent %.3g, noise %.3g): test Dice %.3f [%.3f, %.3f]",
                        r["mode"], r["target_epsilon"], r["epsilon_spent"], r["noise_multiplier"], d["mean"], d["low"],
                        d["high"])

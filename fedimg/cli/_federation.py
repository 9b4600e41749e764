"""Command-line options shared by ``fedimg simulate / poc / export-job / study``.

>>> import argparse
>>> p = argparse.ArgumentParser(); add_federation_arguments(p)
>>> cfg = federation_config_from_args(p.parse_args(["--task", "toy", "--rounds", "3"]))
>>> cfg.rounds, cfg.strategy.name
(3, 'fedavg')
"""

from __future__ import annotations

import argparse
from typing import Any

from fedimg.fl.server.federation import FederationConfig
from fedimg.fl.server.strategy_config import STRATEGIES, StrategyConfig

__all__ = ["add_federation_arguments", "federation_config_from_args", "train_overrides", "add_dp_arguments", "add_he_argument",
           "dp_from_args", "add_client_dp_arguments", "client_dp_from_args", "log_privacy"]

_TRAIN_FIELDS = {"model": "model", "roi": "roi", "batch_size": "batch_size", "lr": "lr", "init_filters": "init_filters",
                 "val_fraction": "val_fraction", "amp": "amp", "seed": "seed", "device": "device",
                 "intensity_norm": "intensity_norm"}


def add_federation_arguments(p: argparse.ArgumentParser, *, rounds: int = 20, local_epochs: int = 2,
                             dp: bool = True) -> None:
    """The federation's options; ``dp``: add the patient-level DP-SGD options (:func:`add_dp_arguments`)."""
    g = p.add_argument_group("federation")
    g.add_argument("--task", choices=["brats", "tiles", "toy"], default="brats", help="what each site trains (default brats)")
    g.add_argument("--rounds", type=int, default=rounds, help=f"federated rounds (default {rounds})")
    g.add_argument("--local-epochs", type=int, default=local_epochs, help=f"epochs per site per round (default {local_epochs})")
    g.add_argument("--strategy", choices=[s.replace("_", "-") for s in STRATEGIES], default="fedavg")
    g.add_argument("--server-lr", type=float, default=None, help="server learning rate (FedOpt default 0.01, others 1.0)")
    g.add_argument("--server-momentum", type=float, default=None,
                   help="fedavgm's server momentum (FedOpt's beta1; default 0.9, 0.8 in fedimg study)")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="fedavgm: Nesterov server momentum (default off; on in fedimg study)")
    g.add_argument("--server-lr-decay", choices=["off", "cosine"], default="off",
                   help="fedavgm: cosine-decay the server lr to 0 over --rounds (default off)")
    g.add_argument("--server-lr-plateau", type=int, default=None, metavar="P",
                   help="fedavgm: after P rounds without a better federated validation, go back to the best "
                        "model, clear the momentum and halve the server lr (default 0: off)")
    g.add_argument("--local-norms", action=argparse.BooleanOptionalAction, default=None,
                   help="normalisation layers stay at each site (FedBN-style, any averaging strategy; personalised: "
                        "each site's own test cases are scored with its own norm layers; default off)")
    g.add_argument("--prox-mu", type=float, default=None, help="FedProx proximal weight (fedprox default 0.01)")
    g.add_argument("--trim-ratio", type=float, default=0.1, help="trimmed-mean fraction cut at each end")
    g.add_argument("--min-sites", type=int, default=1, help="fewest valid updates a round needs (default 1)")
    g.add_argument("--max-rel-norm", type=float, default=10.0,
                   help="reject an update whose norm exceeds this times the global model's (0: off)")
    g.add_argument("--max-norm-ratio", type=float, default=20.0,
                   help="reject an update whose norm exceeds this times last round's median (0: off)")
    g.add_argument("--max-samples", type=float, default=1e7,
                   help="reject a site declaring more training samples than this (0: off; default 1e7)")
    g.add_argument("--max-samples-ratio", type=float, default=10.0,
                   help="reject a site declaring more samples than this times the other sites' median (0: off)")
    g.add_argument("--server-device", default="auto", help="where the server aggregates: auto | cpu | cuda[:n]")
    g.add_argument("--server-threads", type=int, default=0, metavar="N",
                   help="numba threads for the server's CPU fold (default 0: auto, 1 on a server with <= 4 CPUs, "
                        "where one thread measured faster; else all its CPUs)")
    g.add_argument("--send", choices=["diff", "full"], default="diff", help="sites send weight differences or full weights")
    t = p.add_argument_group("local training (the task's config)")
    t.add_argument("--config", default=None, help="JSON file of the task's config fields (options below win)")
    t.add_argument("--model", default=None, help="brats: segresnet | unet")
    t.add_argument("--roi", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--init-filters", type=int, default=None)
    t.add_argument("--val-fraction", type=float, default=None)
    t.add_argument("--amp", choices=["auto", "bf16", "fp32"], default=None)
    t.add_argument("--intensity-norm", choices=["zscore", "landmark"], default=None,
                   help="brats: each case's per-channel normalisation, zscore (default) or landmark (the case's own "
                        "percentile landmarks onto a fixed scale; survives scanner scale, offset and gamma)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default=None, help="sites' device: auto | cpu | cuda[:n]")
    t.add_argument("--threads", type=int, default=None, help="CPU threads per site process")
    t.add_argument("--allow-identifiable", action="store_true",
                   help="train on images without a defacing record (e.g. fedimg synth output)")
    if dp:
        add_dp_arguments(p)
        add_client_dp_arguments(p)


def add_he_argument(p: argparse.ArgumentParser) -> None:
    """``--he``: secure aggregation with NVFlare's homomorphic encryption (POC / provisioned systems)."""
    p.add_argument("--he", action="store_true",
                   help="encrypt every update with CKKS (NVFlare HE, keys from provisioning): the server adds "
                        "ciphertexts and never sees a plain update; sites screen their own updates (FedAvg only)")


def add_dp_arguments(p: argparse.ArgumentParser) -> None:
    """Patient-level DP-SGD options (``fedimg train``, ``simulate``, ``poc``, ``export-job``)."""
    g = p.add_argument_group("patient-level differential privacy (DP-SGD with Opacus at each site)")
    g.add_argument("--dp-epsilon", type=float, default=None,
                   help="target epsilon for each site's whole run: the noise is solved for it and the site stops "
                        "when it is spent")
    g.add_argument("--dp-noise-multiplier", type=float, default=None,
                   help="fixed noise multiplier instead of a target epsilon (epsilon is then reported)")
    g.add_argument("--dp-delta", type=float, default=1e-5, help="delta (default 1e-5)")
    g.add_argument("--dp-max-grad-norm", type=float, default=1.0, help="per-sample gradient clipping norm (default 1)")
    g.add_argument("--dp-accountant", choices=["rdp", "prv"], default="rdp", help="Opacus accountant (default rdp)")


def add_client_dp_arguments(p: argparse.ArgumentParser) -> None:
    """Client-level DP-FedAvg options."""
    g = p.add_argument_group("client-level differential privacy (DP-FedAvg: sites clip, the server adds noise)")
    g.add_argument("--client-dp", action="store_true", help="clip each site's update and add Gaussian noise on the server")
    g.add_argument("--noise-multiplier", type=float, default=1.0, help="client-level noise multiplier z (default 1)")
    g.add_argument("--clip", type=float, default=0.5, help="client-level clipping norm C of a site's update (default 0.5)")
    g.add_argument("--client-dp-delta", type=float, default=1e-5, help="client-level delta (default 1e-5)")


def client_dp_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The client-level DP settings dict, or ``{}`` when ``--client-dp`` is off."""
    if not getattr(args, "client_dp", False):
        return {}
    return {"noise_multiplier": args.noise_multiplier, "clip": args.clip, "delta": args.client_dp_delta, "seed": None}


def dp_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The DP-SGD settings dict (a :class:`fedimg.privacy.DPConfig`'s fields), or ``{}`` when off."""
    eps, z = getattr(args, "dp_epsilon", None), getattr(args, "dp_noise_multiplier", None)
    if eps is None and z is None:
        return {}
    from fedimg.privacy import DPConfig

    return DPConfig(epsilon=eps, noise_multiplier=z, delta=args.dp_delta, max_grad_norm=args.dp_max_grad_norm,
                    accountant=args.dp_accountant, seed=int(getattr(args, "seed", None) or 0)).to_dict()


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The task config dict from ``--config`` plus the explicit options."""
    from fedimg.io import read_json

    base = dict(read_json(args.config)) if getattr(args, "config", None) else {}
    for attr, field in _TRAIN_FIELDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            base[field] = list(value) if isinstance(value, (list, tuple)) else value
    if getattr(args, "allow_identifiable", False):
        base["allow_identifiable"] = True
    if getattr(args, "threads", None):
        base["threads"] = args.threads
    return base


def federation_config_from_args(args: argparse.Namespace, *, threads: int | None = None) -> FederationConfig:
    from fedimg.tasks import get_task

    name = args.strategy.replace("-", "_")
    server_lr = args.server_lr if args.server_lr is not None else (0.01 if name in ("fedadam", "fedyogi") else 1.0)
    momentum = {} if getattr(args, "server_momentum", None) is None else {"beta1": args.server_momentum}
    strategy = StrategyConfig(name=name, server_lr=server_lr, trim_ratio=args.trim_ratio, prox_mu=args.prox_mu,
                              nesterov=bool(getattr(args, "nesterov", False)), **momentum,
                              lr_rounds=args.rounds if getattr(args, "server_lr_decay", "off") == "cosine" else 0,
                              lr_plateau=int(getattr(args, "server_lr_plateau", None) or 0),
                              plateau_metric=get_task(args.task).key_metric,
                              local_norms=bool(getattr(args, "local_norms", None)))
    train = train_overrides(args)
    if dp_from_args(args) and args.task == "tiles" and "norm" not in train:
        train.update(norm="group", model=train.get("model", "resnet18"))  # BatchNorm cannot be made private
    return FederationConfig(
        task=args.task, rounds=args.rounds, local_epochs=args.local_epochs, strategy=strategy,
        min_sites=args.min_sites, max_rel_norm=args.max_rel_norm, max_norm_ratio=args.max_norm_ratio,
        max_samples=args.max_samples, max_samples_ratio=args.max_samples_ratio,
        train=train, server_device=args.server_device, server_threads=getattr(args, "server_threads", 0),
        send=args.send,
        threads_per_site=int(threads or getattr(args, "threads", None) or 0), dp=dp_from_args(args),
        client_dp=client_dp_from_args(args), he=bool(getattr(args, "he", False)),
    )


def log_privacy(out: Any, logger: Any) -> None:
    """Log the privacy guarantees of the federated run in ``out`` (its last metrics.json round)."""
    from fedimg.fl.server.state import read_metrics

    rounds = read_metrics(out)
    if not rounds:
        return
    last = rounds[-1]
    if "client_dp" in last:
        logger.info("%s", last["client_dp"]["statement"])
    for site, rec in sorted(last.get("sites", {}).items()):
        m = rec.get("metrics", {})
        if "train_dp_epsilon" in m:
            logger.info("%s: patient-level DP-SGD (%.3g, %g)-DP per training case after %d steps (noise %.3g, clip %g, "
                        "sample rate %.3g)%s", site, m["train_dp_epsilon"], m.get("train_dp_delta", float("nan")),
                        int(m.get("train_dp_steps", 0)), m.get("train_dp_noise_multiplier", float("nan")),
                        m.get("train_dp_max_grad_norm", float("nan")), m.get("train_dp_sample_rate", float("nan")),
                        "; budget fully spent: the site trains no further" if m.get("train_dp_budget_spent") else "")

"""``fedimg train``: train a segmentation model on one site's cases.

    fedimg train --data data/site-1 --out runs/site-1 --epochs 20 --allow-identifiable
    fedimg train --data data/site-1 --out runs/s1 --dp-epsilon 8 --dp-delta 1e-5 --dp-max-grad-norm 1.0

With ``--dp-epsilon`` (or ``--dp-noise-multiplier``) the site trains with patient-level
DP-SGD (:mod:`fedimg.privacy.dpsgd`): epsilon, delta, noise, clip and sample rate are in
every row of metrics.json and TensorBoard, and RUN/privacy.json states the guarantee.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a 3-D tumour segmentation model on one site",
                       description="Train SegResNet/UNet on a BraTS/MSD folder; writes RUN/model.safetensors (best), "
                                   "last.safetensors, config.json, metrics.json, telemetry.json and tb/.")
    p.add_argument("--data", required=True, help="site folder: BraTS case folders or an MSD Task01 folder")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--epochs", type=int, default=None, help="epochs (schedule length; default 20)")
    p.add_argument("--model", choices=["segresnet", "unet"], default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--allow-identifiable", action="store_true",
                   help="train on images without a defacing record (e.g. fedimg synth output)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields (command-line options win)")
    p.add_argument("--roi", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"), help="training crop (default 64 64 64)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--init-filters", type=int, default=None, help="network width (default 8)")
    p.add_argument("--val-fraction", type=float, default=None)
    p.add_argument("--amp", choices=["auto", "bf16", "fp32"], default=None)
    p.add_argument("--loss", choices=["dice", "dicece"], default=None)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default=None)
    p.add_argument("--channels-last", action="store_true", default=None, help="channels-last-3d memory format")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (slow start)")
    p.add_argument("--stop-after", type=int, default=None, help="run at most N epochs now (continue with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from fedimg.cli._skip import add_skip_argument

    add_skip_argument(p)
    from fedimg.cli._federation import add_dp_arguments

    add_dp_arguments(p)
    p.set_defaults(func=run)


_FIELDS = {"epochs": "epochs", "model": "model", "seed": "seed", "roi": "roi", "batch_size": "batch_size", "lr": "lr",
           "init_filters": "init_filters", "val_fraction": "val_fraction", "amp": "amp", "loss": "loss",
           "optimizer": "optimizer", "channels_last": "channels_last", "compile": "compile"}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedimg.cli import env_threads
    from fedimg.cli._skip import site_cases, write_skipped
    from fedimg.device import configure_threads, resolve_device, seed_everything
    from fedimg.engine.config import TrainConfig
    from fedimg.engine.fit import fit
    from fedimg.errors import InputError
    from fedimg.io import read_json

    out = Path(args.out)
    data_dir = Path(args.data)
    if out.resolve() == data_dir.resolve() or data_dir.resolve() in out.resolve().parents:
        raise InputError(out, "is inside the data folder; write runs elsewhere (inputs are never modified)")
    overrides = {f: getattr(args, a) for a, f in _FIELDS.items() if getattr(args, a, None) is not None}
    if args.resume and (out / "config.json").is_file():
        base = read_json(out / "config.json")
        ignored = sorted(k for k in overrides if k != "epochs" and overrides[k] != base.get(k))
        if ignored:
            log.warning("--resume keeps the run's config; ignoring %s", ", ".join(ignored))
        overrides = {k: v for k, v in overrides.items() if k == "epochs"}
    elif args.config:
        base = read_json(args.config)
    else:
        base = {}
    threads = args.threads or env_threads()
    cfg = TrainConfig.from_dict({**base, **overrides, "device": args.device, "threads": threads,
                                 "allow_identifiable": bool(args.allow_identifiable or base.get("allow_identifiable", False))})
    n = configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    cases, skipped = site_cases(data_dir, skip=args.skip_bad_cases, allow_identifiable=cfg.allow_identifiable)
    log.info("training %s on %d cases from %s (%s, %d threads)%s", cfg.model, len(cases), data_dir, device, n,
             f", {len(skipped)} bad case(s) skipped" if skipped else "")
    from fedimg.cli._dp import report_privacy, run_privacy

    privacy = run_privacy(args, seed=cfg.seed, epochs=cfg.epochs, out=out)
    summary = fit(cases, cfg, out, device=device, resume=args.resume, stop_after=args.stop_after,
                  progress=False if args.no_progress else None, source=data_dir, privacy=privacy)
    write_skipped(out, skipped)
    if privacy is not None:
        report_privacy(privacy, out)
    best = summary["best"]
    log.info("done: %d epoch(s) this run, best dice_mean %.3f at epoch %s; run folder %s", summary["epochs_run"],
             best.get("dice_mean") if best.get("dice_mean") is not None else float("nan"), best.get("epoch"), out)
    return 0

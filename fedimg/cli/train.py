"""``fedimg train``: train a segmentation model on one site's cases.

    fedimg train --data data/site-1 --out runs/site-1 --epochs 20 --allow-identifiable
    fedimg train --data data/site-1 --out runs/s1 --dp-epsilon 8 --dp-delta 1e-5 --dp-max-grad-norm 1.0
    fedimg train --data data/site-1 --out runs/s1 --nproc 2 --batch-size 4 --allow-identifiable

With ``--dp-epsilon`` (or ``--dp-noise-multiplier``) the site trains with patient-level
DP-SGD (:mod:`fedimg.privacy.dpsgd`): epsilon, delta, noise, clip and sample rate are in
every row of metrics.json and TensorBoard, and RUN/privacy.json states the guarantee.

With ``--nproc N`` the site trains on N processes (DistributedDataParallel; gloo on the CPU,
NCCL with one GPU per process) started by torch's launcher, torchrun
(:mod:`fedimg.engine.distributed`); ``--batch-size`` is the global batch, N times the
per-process batch. Rank 0 alone writes the run folder and logs; a failing rank's error
comes back as one line.
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
    p.add_argument("--intensity-norm", choices=["zscore", "landmark"], default=None,
                   help="each case's per-channel normalisation: zscore (default) or landmark (the case's own "
                        "percentile landmarks onto a fixed scale; survives scanner scale, offset and gamma)")
    p.add_argument("--channels-last", action="store_true", default=None, help="channels-last-3d memory format")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (slow start)")
    p.add_argument("--stop-after", type=int, default=None, help="run at most N epochs now (continue with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1,
                   help="train on N processes with DistributedDataParallel through torchrun (one GPU each on CUDA; "
                        "--batch-size is the global batch and must be a multiple of N)")
    p.add_argument("--dist-worker", default=None, help=argparse.SUPPRESS)  # set by --nproc for its workers
    from fedimg.cli._skip import add_skip_argument

    add_skip_argument(p)
    from fedimg.cli._federation import add_dp_arguments

    add_dp_arguments(p)
    p.set_defaults(func=run)


_FIELDS = {"epochs": "epochs", "model": "model", "seed": "seed", "roi": "roi", "batch_size": "batch_size", "lr": "lr",
           "init_filters": "init_filters", "val_fraction": "val_fraction", "amp": "amp", "loss": "loss",
           "optimizer": "optimizer", "channels_last": "channels_last", "compile": "compile",
           "intensity_norm": "intensity_norm"}


def run(args: argparse.Namespace) -> int:
    if getattr(args, "dist_worker", None):
        return _run_worker(args)
    if getattr(args, "nproc", 1) != 1:
        return _launch(args)
    return _train(args)


def _config(args: argparse.Namespace):
    """The run's TrainConfig from ``--config``, the options and (``--resume``) the run folder."""
    from pathlib import Path

    from fedimg.cli import env_threads
    from fedimg.engine.config import TrainConfig
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
    return TrainConfig.from_dict({**base, **overrides, "device": args.device, "threads": threads,
                                  "allow_identifiable": bool(args.allow_identifiable or base.get("allow_identifiable", False))})


def _train(args: argparse.Namespace, dist=None) -> int:
    """Train in this process (``dist``: this process's rank of a ``--nproc`` group, or ``None``)."""
    from pathlib import Path

    from fedimg.cli._skip import site_cases, write_skipped
    from fedimg.device import configure_threads, resolve_device, seed_everything
    from fedimg.engine.fit import fit

    out, data_dir = Path(args.out), Path(args.data)
    cfg = _config(args)
    n = configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if dist is not None:
        from fedimg.engine.distributed import init_process_group

        device = init_process_group(dist, device)
    seed_everything(cfg.seed)
    cases, skipped = site_cases(data_dir, skip=args.skip_bad_cases, allow_identifiable=cfg.allow_identifiable)
    log.info("training %s on %d cases from %s (%s, %d threads)%s", cfg.model, len(cases), data_dir, device, n,
             f", {len(skipped)} bad case(s) skipped" if skipped else "")
    from fedimg.cli._dp import report_privacy, run_privacy

    privacy = run_privacy(args, seed=cfg.seed, epochs=cfg.epochs, out=out)
    summary = fit(cases, cfg, out, device=device, resume=args.resume, stop_after=args.stop_after,
                  progress=False if args.no_progress else None, source=data_dir, privacy=privacy, dist=dist)
    if dist is not None and not dist.is_main:
        return 0
    write_skipped(out, skipped)
    if privacy is not None:
        report_privacy(privacy, out)
    best = summary["best"]
    log.info("done: %d epoch(s) this run, best dice_mean %.3f at epoch %s; run folder %s", summary["epochs_run"],
             best.get("dice_mean") if best.get("dice_mean") is not None else float("nan"), best.get("epoch"), out)
    return 0


def _launch(args: argparse.Namespace) -> int:
    """``--nproc N``: check everything checkable here, then run N workers with torchrun."""
    import tempfile
    from pathlib import Path

    from fedimg.cli._federation import dp_from_args
    from fedimg.device import available_cpus
    from fedimg.engine.checkpoint import check_run_folder
    from fedimg.engine.distributed import launch, per_rank_batch
    from fedimg.errors import ConfigError
    from fedimg.io import write_json

    nproc = int(args.nproc)
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: use 1 or more processes")
    if dp_from_args(args):
        raise ConfigError("--dp-* (DP-SGD) cannot run with --nproc > 1 (its accountant samples one process's batches); "
                          "drop --nproc or the --dp-* options")
    cfg = _config(args)
    per_rank_batch(cfg.batch_size, nproc)
    check_run_folder(Path(args.out), resume=args.resume)
    _check_gpus(cfg.device, nproc)
    threads = max(1, (cfg.threads or available_cpus()) // nproc)
    log.info("starting %d training processes with torchrun (%d thread(s) each, per-process batch %d)", nproc, threads,
             cfg.batch_size // nproc)
    spec = {k: v for k, v in vars(args).items() if k not in ("func", "dist_worker")}
    spec["threads"] = threads
    flags = ["--debug"] * bool(getattr(args, "debug", False)) + ["-q"] * bool(getattr(args, "quiet", False)) \
        + ["-v"] * int(getattr(args, "verbose", 0) or 0)
    with tempfile.TemporaryDirectory(prefix="fedimg-ddp-") as tmp:
        write_json(Path(tmp) / "spec.json", spec)
        launch(["-m", "fedimg", *flags, "train", "--data", str(args.data), "--out", str(args.out),
                "--dist-worker", str(Path(tmp) / "spec.json")], nproc=nproc, error_dir=tmp)
    log.info("done: %d processes; run folder %s", nproc, args.out)
    return 0


def _check_gpus(device: str, nproc: int) -> None:
    """On CUDA each process takes one GPU (``cuda:<local rank>``): refuse more processes than GPUs."""
    from fedimg.device import resolve_device
    from fedimg.errors import ConfigError

    if resolve_device(device).type == "cuda":
        import torch

        if nproc > torch.cuda.device_count():
            raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs (one per process) but {torch.cuda.device_count()} "
                              "are visible; use --nproc <= the GPU count, or --device cpu")


def _run_worker(args: argparse.Namespace) -> int:
    """One torchrun worker of ``--nproc``: its rank from torchrun's environment; errors to the launcher.

    A rank that finished waits for the others before it leaves the group; a failed one writes its
    error and leaves at once. The process then ends through :func:`fedimg.engine.distributed.exit_worker`
    (no interpreter shutdown while gloo's threads are alive).
    """
    from pathlib import Path

    from fedimg.config import torchrun_rank_from_env
    from fedimg.engine.distributed import DistContext, exit_worker, leave_process_group, write_rank_error
    from fedimg.io import read_json

    spec_path = Path(args.dist_worker)
    rank, world, local = torchrun_rank_from_env()
    if rank:
        logging.getLogger("fedimg").setLevel(logging.WARNING)  # rank 0 alone logs
    try:
        ns = argparse.Namespace(**read_json(spec_path))
        dist = DistContext(rank=rank, world_size=world, local_rank=local)
        code = _train(ns, dist)
        leave_process_group(sync=True)  # a finished rank waits for the others
    except Exception as exc:  # every failure goes back to the launcher as one line
        log.debug("rank %d failed", rank, exc_info=True)
        write_rank_error(spec_path.parent, rank, exc)
        code = int(getattr(exc, "exit_code", 1))
        leave_process_group(sync=False)  # its peers may wait in a collective that never completes
    exit_worker(code)

"""``fedimg train-tiles``: train a tile classifier on one site's tile store.

    fedimg train-tiles --data tiles/ --out runs/tiles-site1 --model densenet121
    fedimg train-tiles --data wsi_tiles/ --out runs/wsi --stream on     # a store larger than memory
    fedimg train-tiles --data tiles/ --out runs/dp --dp-epsilon 8       # DP-SGD (Opacus): resnet18, GroupNorm
    fedimg tiles --synthetic-sites 3 --out pathology_sites/ && \\
        fedimg train-tiles --data pathology_sites/site-1 --out runs/tiles-site1 --model resnet18
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)

_FIELDS = ("model", "epochs", "batch_size", "lr", "width", "num_classes", "amp", "channels_last", "seed", "val_fraction",
           "stain_normalize", "max_tiles", "steps_per_epoch", "stream", "stream_buffer_mb")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-tiles", help="train a tile classifier (DenseNet121/ResNet) on one site's tiles",
                       description="Train on a tile store (fedimg tiles output, or PatchCamelyon-style HDF5 with x/y). "
                                   "Writes RUN/model.safetensors (best val AUC), last.safetensors, last.state.safetensors, "
                                   "config.json, metrics.json, telemetry.json and tb/. Synthetic demo data: "
                                   "`fedimg tiles --synthetic-sites 3 --out pathology_sites/`.")
    p.add_argument("--data", required=True, help="tile store folder or .h5 file (labelled tiles)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--model", choices=["densenet121", "resnet18", "resnet10"], default=None, help="default densenet121")
    p.add_argument("--epochs", type=int, default=None, help="default 10")
    p.add_argument("--batch-size", type=int, default=None, help="default 32")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (AdamW, warm-up + cosine)")
    p.add_argument("--width", type=float, default=None, help="channel multiplier (default 1.0)")
    p.add_argument("--num-classes", type=int, default=None, help="default 2")
    p.add_argument("--amp", choices=["auto", "bf16", "fp32"], default=None, help="bf16 autocast (auto: where supported)")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default=None, help="auto: on CUDA")
    p.add_argument("--val-fraction", type=float, default=None, help="held-out fraction, stratified (default 0.2)")
    p.add_argument("--stain-normalize", choices=["none", "macenko", "reinhard"], default=None, help="normalise tiles once at load")
    p.add_argument("--target", default=None, help="target H&E image for --stain-normalize")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/stain augmentation")
    p.add_argument("--max-tiles", type=int, default=None, help="use the first N tiles")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap optimizer steps per epoch")
    p.add_argument("--stream", choices=["auto", "on", "off"], default=None,
                   help="stream tiles from the store, shuffled by blocks, in memory independent of the tile count "
                        "(auto: when the labelled tiles exceed 2 GiB; off: hold them all on the device)")
    p.add_argument("--stream-buffer-mb", type=int, default=None, help="streamed: memory for tiles read ahead (default 256)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--stop-after", type=int, default=None, help="run at most N epochs now (continue with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from fedimg.cli._federation import add_dp_arguments

    add_dp_arguments(p)  # DP-SGD over tiles: the protected unit is one tile
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedimg.cli import env_threads
    from fedimg.device import configure_threads, resolve_device, seed_everything
    from fedimg.errors import ConfigError, InputError
    from fedimg.io import read_json
    from fedimg.pathology.config import TileTrainConfig
    from fedimg.tasks.tiles_fit import fit_tiles

    out, data = Path(args.out), Path(args.data)
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise InputError(out, "is inside the data folder; write runs elsewhere (inputs are never modified)")
    overrides = {f: getattr(args, f) for f in _FIELDS if getattr(args, f, None) is not None}
    if args.target is not None:
        overrides["stain_target"] = str(args.target)
    if args.no_augment:
        overrides["augment"] = False
    base: dict = {}
    if args.resume and (out / "config.json").is_file():
        base = read_json(out / "config.json")
        ignored = sorted(k for k in overrides if k != "epochs" and overrides[k] != base.get(k))
        if ignored:
            log.warning("--resume keeps the run's config; ignoring %s", ", ".join(ignored))
        overrides = {k: v for k, v in overrides.items() if k == "epochs"}
    from fedimg.cli._dp import report_privacy, run_privacy
    from fedimg.cli._federation import dp_from_args

    if dp_from_args(args) and not base:
        if overrides.get("stream") == "on":
            raise ConfigError("DP-SGD (--dp-*) draws tiles by index from memory and cannot train on a streamed tile "
                              "store: drop --stream on (or --dp-*)")
        if not str(overrides.get("model", "resnet")).startswith("resnet"):
            raise ConfigError(f"--model {overrides['model']} uses BatchNorm, which DP-SGD cannot make private: "
                              "use --model resnet18 or resnet10 (GroupNorm)")
        overrides = {"model": "resnet18", **overrides, "norm": "group"}  # per-sample normalisation
    cfg = TileTrainConfig.from_dict({**base, **overrides, "device": args.device})
    n = configure_threads(args.threads or env_threads())
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    log.info("training %s on %s (%s, %d threads)", cfg.model, data, device, n)
    privacy = run_privacy(args, seed=cfg.seed, epochs=cfg.epochs, out=out)
    s = fit_tiles(data, cfg, out, device=device, resume=args.resume, stop_after=args.stop_after,
                  progress=False if args.no_progress else None, privacy=privacy)
    if privacy is not None:
        report_privacy(privacy, out, unit="training tile (one patient only where a patient gives one tile)")
    log.info("done: %d epoch(s), best AUC %.3f at epoch %s; run folder %s", s["epochs_run"], s["best"].get("auc", float("nan")),
             s["best"].get("epoch"), out)
    return 0

"""``fedimg evaluate``: Dice per region (TC/WT/ET) of a trained model on a site, per case and mean.

    fedimg evaluate --model runs/site-1 --data data/site-2
    # writes runs/site-1/eval-site-2/dice.csv and dice.json (or --out DIR)
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run", "write_results"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="per-case and mean Dice (TC/WT/ET) of a model on a data folder",
                       description="Sliding-window inference on every labelled case; writes dice.csv and dice.json.")
    p.add_argument("--model", required=True, help="run folder from fedimg train (uses its best model) or a .safetensors")
    p.add_argument("--data", required=True, help="site folder (BraTS case folders or MSD Task01)")
    p.add_argument("--out", default=None, help="output folder (default: <run>/eval-<data folder name>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None)
    from fedimg.cli._skip import add_skip_argument

    add_skip_argument(p)
    p.set_defaults(func=run)


def write_results(out_dir, result: dict, meta: dict) -> tuple:
    """Write ``dice.csv`` (one row per case plus a ``mean`` row) and ``dice.json``; returns both paths."""
    import csv
    import io
    from pathlib import Path

    from fedimg.io import write_bytes, write_json

    out_dir = Path(out_dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case_id", "dice_tc", "dice_wt", "dice_et", "dice_mean"])
    for row in result["per_case"]:
        vals = [row["dice_tc"], row["dice_wt"], row["dice_et"]]
        w.writerow([row["case_id"], *(f"{v:.6f}" for v in vals), f"{sum(vals) / 3:.6f}"])
    w.writerow(["mean", *(f"{result[k]:.6f}" for k in ("dice_tc", "dice_wt", "dice_et", "dice_mean"))])
    csv_path, json_path = out_dir / "dice.csv", out_dir / "dice.json"
    write_bytes(csv_path, buf.getvalue().encode())
    write_json(json_path, {**meta, **result})
    return csv_path, json_path


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedimg.cli import env_threads
    from fedimg.cli._skip import site_cases, write_skipped
    from fedimg.device import configure_threads, resolve_device
    from fedimg.engine.checkpoint import load_checkpoint, resolve_checkpoint
    from fedimg.engine.config import TrainConfig
    from fedimg.engine.evaluate import evaluate

    configure_threads(args.threads or env_threads())
    device = resolve_device(args.device)
    ckpt = resolve_checkpoint(args.model)
    data_dir = Path(args.data)
    cases, skipped = site_cases(data_dir, skip=args.skip_bad_cases)
    model, meta = load_checkpoint(ckpt, device=device)
    cfg = TrainConfig.from_dict({**meta.get("config", {}), "device": str(device)})
    result = evaluate(model, cases, cfg, device=device)
    out_dir = Path(args.out) if args.out else ckpt.parent / f"eval-{data_dir.resolve().name}"
    csv_path, json_path = write_results(out_dir, result, {"model": str(ckpt), "data": str(data_dir),
                                                          "data_fingerprint_train": meta.get("data_fingerprint"),
                                                          "skipped": [p.to_dict() for p in skipped]})
    write_skipped(out_dir, skipped)
    log.info("%d cases: Dice TC %.3f  WT %.3f  ET %.3f  mean %.3f -> %s, %s", result["num_cases"], result["dice_tc"],
             result["dice_wt"], result["dice_et"], result["dice_mean"], csv_path, json_path)
    return 0

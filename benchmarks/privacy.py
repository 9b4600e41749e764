"""DP-SGD step time against the plain step: same model, same batch, same trainer (CPU or GPU).

    python benchmarks/privacy.py [--task tiles|brats|both] [--repeats 5] [--device auto] [--json out.json]
    python benchmarks/privacy.py --he [--rounds 3] [--json out.json]     # HE vs plain (NVFlare CKKS)

Each repeat times ``--steps`` training steps of the plain trainer and of the same trainer made
private (Opacus per-sample gradients via ExpandedWeights, clipping, noise; fp32 in both, so the
ratio is the cost of DP itself), interleaved, from the same initial weights and the same index
batch (the DP path is handed the fixed batch instead of a Poisson draw, so both do the same
work). Reports the median seconds per step, wall and process CPU time, and DP/plain ratios.

``--he``: the cost of secure aggregation (``fedimg poc --he``, NVFlare's TenSEAL CKKS) against
plain updates. (1) Offline, per model (toy, BraTS SegResNet): bytes of one update as NVFlare's
FOBS serialises it (plain float32 vs CKKS with HEBuilder's parameters: poly 8192, [60, 40, 40],
2^40, symmetric), and the seconds to encrypt it, to add two encrypted updates, to decrypt.
(2) Real POC runs of the toy task, plain then HE (``--poc-repeats`` pairs): seconds per round
(median gap between a site's consecutive sends, from the site logs), and the bytes per update the HE aggregator recorded.
Not part of the wheel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _common


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=["tiles", "brats", "both"], default="both")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="one repeat of two steps (a smoke run)")
    p.add_argument("--he", action="store_true", help="measure HE vs plain updates instead of DP-SGD")
    p.add_argument("--rounds", type=int, default=3, help="--he: rounds of each POC run (>= 2)")
    p.add_argument("--poc-repeats", type=int, default=1, help="--he: plain/HE POC run pairs (0: offline only)")


def _tile_trainer(device, private: bool):
    import torch

    from fedimg.pathology.config import TileTrainConfig
    from fedimg.pathology.models import build_tile_model
    from fedimg.pathology.tiledata import TileSiteData
    from fedimg.privacy import DPConfig, PatientDP
    from fedimg.tasks.tiles_train import TileTrainer

    cfg = TileTrainConfig(model="resnet18", norm="group", width=0.5, batch_size=32, epochs=1, amp="fp32",
                          augment=False, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 64, 64), generator=g, dtype=torch.uint8).to(device)
    data = TileSiteData(x_train=x, y_train=(torch.arange(64) % 2).to(device), x_val=x[:8], y_val=torch.zeros(8, dtype=torch.long).to(device),
                        device=device, fingerprint="bench", classes=["0", "1"])
    torch.manual_seed(0)
    trainer = TileTrainer(build_tile_model(cfg), data, cfg)
    if private:
        trainer.make_private(PatientDP(DPConfig(noise_multiplier=1.0), total_epochs=1000))
    return trainer, torch.arange(32).to(device), "resnet18 x0.5 GroupNorm, 32 tiles of 64 px"


def _brats_trainer(device, private: bool):
    import torch

    from fedimg.data import synthesize
    from fedimg.engine.config import TrainConfig
    from fedimg.engine.loop import Trainer
    from fedimg.privacy import DPConfig, PatientDP
    from fedimg.tasks import brats

    root = Path("/tmp/fedimg-bench-privacy")
    site = root / "d" / "site-1"
    if not site.exists():
        synthesize(root / "d", sites=1, cases_per_site=4, seed=0, spacing=4.0)
    cfg = TrainConfig(roi=(48, 48, 48), batch_size=2, epochs=1, amp="fp32", seed=0, allow_identifiable=True,
                      device=str(device), val_fraction=0.0)
    data = brats.load_site(site, cfg, device)
    torch.manual_seed(0)
    trainer = Trainer(brats.build_model(cfg), data, cfg)
    if private:
        trainer.make_private(PatientDP(DPConfig(noise_multiplier=1.0), total_epochs=1000))
    return trainer, [0, 1], "SegResNet (8 filters), 2 crops of 48^3"


def _time(trainer, batch, steps: int) -> tuple[float, float]:
    import torch

    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.optimizer.zero_grad(set_to_none=True)
        loss, _ = trainer.step_loss(batch)
        loss.backward()
        trainer.optimizer.step()
    sync()
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def _he_context():
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40],
                     encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)  # as nvflare.lighter.impl.he.HEBuilder
    ctx.generate_relin_keys()
    ctx.global_scale = 2**40
    return ctx


def _he_offline(task: str, config: dict) -> dict:
    """Bytes and seconds of one update of ``task``'s model, plain vs CKKS (FOBS, as NVFlare sends it)."""
    import numpy as np
    import tenseal as ts
    from nvflare.apis.dxo import DXO, DataKind
    from nvflare.app_common.decomposers import common_decomposers
    from nvflare.app_opt.he import decomposers
    from nvflare.fuel.utils import fobs

    from fedimg.fl.nvflare.persistor import initial_weights

    decomposers.register()
    common_decomposers.register()
    w = initial_weights(task, config)
    rng = np.random.default_rng(0)
    upd = {k: (1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in w.items()}
    n = sum(v.size for v in upd.values())
    plain = len(fobs.dumps(DXO(DataKind.WEIGHT_DIFF, data=upd).to_shareable()))
    ctx = _he_context()
    t0 = time.perf_counter()
    enc = {k: ts.ckks_vector(ctx, v.ravel().astype(np.float64) * 24.0) for k, v in upd.items()}  # weighed by n
    t_enc = time.perf_counter() - t0
    he = len(fobs.dumps(DXO(DataKind.WEIGHT_DIFF, data=enc).to_shareable()))
    t0 = time.perf_counter()
    total = {k: v + v for k, v in enc.items()}
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    err = max(float(np.max(np.abs(np.asarray(total[k].decrypt()) / 48.0 - upd[k].ravel()))) for k in upd)
    t_dec = time.perf_counter() - t0
    return {"params": int(n), "plain_bytes": plain, "he_bytes": he, "bytes_ratio": he / plain,
            "encrypt_s": t_enc, "add_two_s": t_add, "decrypt_s": t_dec, "max_abs_error": err}


def _round_seconds(run_dir: Path) -> float:
    """Median seconds between a site's consecutive sends (its "site-N round R: train_loss=..." log
    lines): one whole round trip, the same measure for plain and HE runs."""
    import datetime
    import re

    gaps = []
    for log in run_dir.glob("nvflare/*/prod_*/site-*/*/log.txt"):
        stamps = []
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) .* site-\d+ round \d+: train_loss=", line)
            if m:
                stamps.append(datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
        gaps += [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps) if gaps else float("nan")


def run_he(args: argparse.Namespace) -> int:
    import json
    import subprocess
    import tempfile

    from fedimg.io import write_json
    from fedimg.tasks.toy import make_sites

    out = {"offline": {}, "poc": []}
    for task, cfg in (("toy", {}), ("brats", {})):
        r = out["offline"][task] = _he_offline(task, cfg)
        print(f"{task}: {r['params']} params: plain {r['plain_bytes'] / 1e6:.3f} MB, CKKS {r['he_bytes'] / 1e6:.2f} MB "
              f"({r['bytes_ratio']:.1f}x); encrypt {r['encrypt_s']:.3f} s, add two {r['add_two_s']:.3f} s, "
              f"decrypt {r['decrypt_s']:.3f} s, max error {r['max_abs_error']:.2e}")
    tmp = Path(tempfile.mkdtemp(prefix="fedimg-he-bench-"))
    make_sites(tmp / "data", n_sites=2, n=48, seed=2)
    fedimg = [sys.executable, "-m", "fedimg.cli"] if not Path(sys.executable).with_name("fedimg").exists() else \
        [str(Path(sys.executable).with_name("fedimg"))]
    for rep in range(args.poc_repeats):
        for mode in ("plain", "he"):
            run = tmp / f"{mode}-{rep}"
            cmd = [*fedimg, "poc", "--data", str(tmp / "data"), "--out", str(run), "--task", "toy", "--rounds",
                   str(args.rounds), "--no-progress", "--no-crossval", *(["--he"] if mode == "he" else [])]
            subprocess.run(cmd, check=True, capture_output=True, timeout=900)
            rec = {"mode": mode, "repeat": rep, "seconds_per_round": _round_seconds(run)}
            audit = run / "he_audit.jsonl"
            if audit.exists():
                sizes = [json.loads(x)["bytes"] for x in audit.read_text().splitlines()]
                rec["bytes_per_update"] = statistics.median(sizes)
            out["poc"].append(rec)
            print(f"POC toy {mode} (run {rep + 1}): {rec['seconds_per_round']:.2f} s per round"
                  + (f", {rec['bytes_per_update'] / 1e6:.2f} MB per encrypted update" if "bytes_per_update" in rec else ""))
    if args.json:
        write_json(args.json, out)
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    if args.he:
        return run_he(args)

    from fedimg.device import resolve_device
    from fedimg.io import write_json

    if args.quick:
        args.repeats, args.steps = 1, 2
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tasks = ["tiles", "brats"] if args.task == "both" else [args.task]
    out = {"device": str(device), "threads": args.threads, "steps": args.steps, "repeats": args.repeats, "tasks": {}}
    for task in tasks:
        make = _tile_trainer if task == "tiles" else _brats_trainer
        (plain, batch, what), (private, _, _) = make(device, False), make(device, True)
        _time(plain, batch, 1), _time(private, batch, 1)  # warm-up
        rows = {"plain": [], "dp": []}
        for _ in range(args.repeats):  # interleaved
            rows["plain"].append(_time(plain, batch, args.steps))
            rows["dp"].append(_time(private, batch, args.steps))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
        res = {"what": what, "plain_s_per_step": med["plain"][0], "dp_s_per_step": med["dp"][0],
               "plain_cpu_s_per_step": med["plain"][1], "dp_cpu_s_per_step": med["dp"][1],
               "ratio_wall": med["dp"][0] / med["plain"][0], "ratio_cpu": med["dp"][1] / med["plain"][1]}
        out["tasks"][task] = res
        print(f"{task}: {what} on {device}: plain {res['plain_s_per_step']:.3f} s/step, DP-SGD {res['dp_s_per_step']:.3f} "
              f"s/step -> {res['ratio_wall']:.2f}x wall, {res['ratio_cpu']:.2f}x CPU time (median of {args.repeats})")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(_common.main(_common.parser(__doc__.splitlines()[0], _add), run, None))

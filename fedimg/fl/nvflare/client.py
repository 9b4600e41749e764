"""NVFlare Client API script: one site's side of fedimg's federated training.

NVFlare runs this file on every site (``ScriptRunner``). Each round it receives the
global weights, evaluates them on the site's validation cases, trains for
``--local-epochs`` with the task's training loop (FedProx term when ``--prox-mu > 0``)
and sends back only:

* the weight difference ``local - global`` (or the full weights with ``--send full``),
* the number of training cases as the aggregation weight (``NUM_STEPS_CURRENT_ROUND``),
* float metrics (``val_*`` of the incoming global model, ``train_*`` of local training).

No image data, case ids or file paths ever leave the site. Scalars also go to the
server's TensorBoard through NVFlare's tracking API.

Run by NVFlare, e.g.::

    python client.py --task brats --data /data/site-1 --local-epochs 2 --cfg roi=[64,64,64] ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["encode_config", "decode_config", "build_arg_parser", "make_payload", "main"]

log = logging.getLogger("fedimg.fl.nvflare.client")

#: Environment variable naming the site's data folder when ``--data`` is not given.
DATA_ENV = "FEDIMG_SITE_DATA"


def encode_config(config: dict[str, Any]) -> str:
    """A task config dict as readable ``--cfg key=value`` options for ``train_args``.

    >>> encode_config({"roi": [32, 32, 32], "model": "segresnet"})
    '--cfg model=segresnet --cfg roi=[32,32,32]'
    """
    parts = []
    for k, v in sorted(config.items()):
        text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        if any(c.isspace() or c in "'\"\\" for c in text):
            raise ValueError(f"config value {k}={text!r} cannot be passed on the client command line")
        parts.append(f"--cfg {k}={text}")
    return " ".join(parts)


def decode_config(items: list[str] | None) -> dict[str, Any]:
    """Inverse of :func:`encode_config` (``["k=v", ...]``; values are JSON or plain strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, _, text = item.partition("=")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="fedimg NVFlare client")
    p.add_argument("--task", default="brats")
    p.add_argument("--data", default=None, help=f"site data folder (default: ${DATA_ENV})")
    p.add_argument("--cfg", action="append", default=[], metavar="KEY=VALUE", help="task config field (JSON value)")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--prox-mu", type=float, default=0.0)
    p.add_argument("--send", choices=("diff", "full"), default="diff")
    p.add_argument("--local-model-dir", default="", help="keep this site's latest local model here (never sent)")
    p.add_argument("--threads", type=int, default=0)
    return p


def make_payload(global_params: dict[str, Any], local_params: dict[str, Any], *, num_samples: int,
                 val: dict[str, float], train: dict[str, float], send: str = "diff") -> tuple[dict, dict, dict]:
    """``(params, metrics, meta)`` of one round's result: weights only, counts, float metrics."""
    import numpy as np

    params = {}
    for k, g in global_params.items():
        loc = local_params[k].detach().cpu() if hasattr(local_params[k], "detach") else local_params[k]
        params[k] = loc - g if send == "diff" else loc
    metrics = {}
    for prefix, src in (("val_", val), ("train_", train)):
        for k, v in src.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v):
                metrics[prefix + str(k)] = float(v)
    meta = {"NUM_STEPS_CURRENT_ROUND": int(num_samples)}
    return params, metrics, meta


def main(argv: list[str] | None = None, *, update_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
    """Client loop. ``update_hook`` transforms the outgoing params (tests use it to play a bad site)."""
    import numpy as np
    import torch

    import nvflare.client as flare
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    from fedimg.device import configure_threads, resolve_device, seed_everything
    from fedimg.tasks import get_task

    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    configure_threads(args.threads or None)
    flare.init()
    site = flare.get_site_name()
    data_dir = args.data or os.environ.get(DATA_ENV)
    if not data_dir:
        raise SystemExit(f"{site}: no data folder; pass --data or set {DATA_ENV}")
    task = get_task(args.task)
    config = task.config_from_dict(decode_config(args.cfg))
    seed_everything(int(getattr(config, "seed", 0)))
    device = resolve_device(str(getattr(config, "device", "auto")))
    t0 = time.perf_counter()
    data = task.load_site(data_dir, config, device)
    log.info("%s: site data ready in %.1fs", site, time.perf_counter() - t0)
    model = task.build_model(config)
    writer = _writer()

    while flare.is_running():
        incoming = flare.receive()
        if incoming is None:
            break
        rnd = int(incoming.current_round or 0)
        global_sd = {k: (v.detach().cpu() if hasattr(v, "detach") else torch.as_tensor(np.asarray(v)))
                     for k, v in incoming.params.items()}
        model.load_state_dict(global_sd)
        model.to(device)
        t_eval = time.perf_counter()
        val = task.evaluate(model, data, config)
        t_train = time.perf_counter()
        train, n = task.train_one_round(model, data, config, epochs=args.local_epochs,
                                        global_params=global_sd, prox_mu=args.prox_mu)
        train = {**train, "seconds_train": time.perf_counter() - t_train, "seconds_eval": t_train - t_eval}
        local_sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        params, metrics, meta = make_payload(global_sd, local_sd, num_samples=n, val=val, train=train, send=args.send)
        if update_hook is not None:
            params = update_hook(params)
        if args.local_model_dir:
            _keep_local(Path(args.local_model_dir) / f"{site}.safetensors", local_sd, rnd)
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, rnd)
        log.info("%s round %d: %s", site, rnd + 1, ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        flare.send(FLModel(params=params, params_type=ParamsType.DIFF if args.send == "diff" else ParamsType.FULL,
                           metrics=metrics, meta=meta))
    return 0


def _writer():
    try:
        from nvflare.client.tracking import SummaryWriter

        return SummaryWriter()
    except Exception as exc:  # tracking is optional; never fail training for it
        log.warning("tracking disabled: %s", exc)
        return None


def _keep_local(path: Path, state: dict[str, Any], rnd: int) -> None:
    from fedimg.fl.server.state import save_params

    save_params(path, state, {"round": rnd + 1, "kind": "local"})


if __name__ == "__main__":
    sys.exit(main())

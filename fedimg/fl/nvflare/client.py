"""NVFlare Client API script: one site's side of fedimg's federated training.

NVFlare runs this file on every site (``ScriptRunner``). Its whole configuration (task,
task config, local epochs, FedProx ``prox_mu``, what to send, threads, where to keep the
local model, the site's data folder) is one JSON file, :class:`ClientConfig`, that the job
ships in the site app's ``custom/`` folder (:func:`fedimg.fl.nvflare.job.build_recipe`);
the script's only argument names it (``--config fedimg_client.json``), so paths with
spaces need no quoting. Without a data folder in the file, the site's
``$FEDIMG_SITE_DATA`` is used (:func:`fedimg.config.site_data_dir_from_env`).

Each round it receives the global weights, evaluates them on the site's validation
cases, trains for ``local_epochs`` with the task's training loop (FedProx term when
``prox_mu > 0``) and sends back only:

* the weight difference ``local - global`` (or the full weights with ``send="full"``),
* the number of training cases as the aggregation weight (``NUM_STEPS_CURRENT_ROUND``),
* float metrics (``val_*`` of the incoming global model, ``train_*`` of local training),
* the site's own name (``meta["site"]``, NVFlare's name for it, which NVFlare already knows):
  the server rejects an update whose stated site is not the one it came from, and the site
  refuses to run under another site's client config (:meth:`ClientConfig.check_site`).

No image data, case ids or file paths ever leave the site. Scalars also go to the
server's TensorBoard through NVFlare's tracking API.

Run by NVFlare, e.g.::

    python client.py --config fedimg_client.json

>>> make_payload({}, {}, num_samples=3, val={"accuracy": 0.5}, train={})[1:]
({'val_accuracy': 0.5}, {'NUM_STEPS_CURRENT_ROUND': 3})
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedimg.errors import ConfigError
from fedimg.fl.nvflare.client_config import CONFIG_NAME, ClientConfig, find_config

__all__ = ["CONFIG_NAME", "VAL_PREFIX", "ClientConfig", "find_config", "build_arg_parser", "make_payload", "main"]

log = logging.getLogger("fedimg.fl.nvflare.client")
VAL_PREFIX = "val_"  # a site's validation of the incoming global model, as sent (``val_dice_mean``)

def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="fedimg NVFlare client")
    p.add_argument("--config", default=CONFIG_NAME,
                   help=f"this site's client config (JSON; default {CONFIG_NAME} in the job's custom/ folder)")
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
    for prefix, src in ((VAL_PREFIX, val), ("train_", train)):
        for k, v in src.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v):
                metrics[prefix + str(k)] = float(v)
    meta = {"NUM_STEPS_CURRENT_ROUND": int(num_samples)}
    return params, metrics, meta


def main(argv: list[str] | None = None, *, update_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
    """Client loop. ``update_hook`` transforms the outgoing params (tests use it to play a bad site).

    Under torchrun (a site on N processes, ``fedimg simulate --site-nproc SITE=N``) every rank
    loads the data and model; rank 0 alone talks to NVFlare (:func:`_rounds`) and hands each
    round's global weights to the others, which train in step with it (DDP) and send nothing.
    """
    import nvflare.client as flare

    from fedimg.config import SITE_DATA_ENV, site_data_dir_from_env
    from fedimg.device import configure_threads, resolve_device, seed_everything
    from fedimg.tasks import get_task

    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    config_path = find_config(args.config)
    cc = ClientConfig.read(config_path)
    ctx = _dist_context()  # under torchrun (a site on N processes): this process's rank, else None
    world = ctx.world_size if ctx else 1
    configure_threads(max(1, cc.threads // world) if cc.threads else None)
    flare.init(rank=str(ctx.rank if ctx else 0))  # ranks > 0 have no Client API session: rank 0 shares each round
    site = flare.get_site_name() or "site"
    cc.check_site(site, config_path)  # the name it states in every update is the name of the data it trains
    data_dir = cc.data or site_data_dir_from_env()
    if not data_dir:
        raise SystemExit(f"{site}: no data folder; export the job with --site-data {site}=PATH or set {SITE_DATA_ENV}")
    task = get_task(cc.task)
    config = task.config_from_dict(cc.task_config)
    seed_everything(int(getattr(config, "seed", 0)))
    device = resolve_device(str(getattr(config, "device", "auto")))
    device = _join_group(ctx, device)
    t0 = time.perf_counter()
    data = task.load_site(data_dir, config, device)
    log.info("%s: site data ready in %.1fs", site, time.perf_counter() - t0)
    model = task.build_model(config)
    if ctx is not None:
        _use_ddp(ctx, data)
        if not ctx.is_main:
            return _follow_rounds(ctx, task, model, data, config, cc, device)
    _rounds(flare, cc, ctx, task, model, data, config, device, site, _writer(), update_hook)
    if ctx is not None:  # (on a failure this process exits and torchrun stops the other ranks)
        _share_round(ctx, None)  # the other ranks stop too
        from fedimg.engine.distributed import leave_process_group

        leave_process_group()
    return 0


def _rounds(flare: Any, cc: ClientConfig, ctx: Any, task: Any, model: Any, data: Any, config: Any, device: Any,
            site: str, writer: Any, update_hook: Callable | None) -> None:
    """Rank 0's (or the only process's) round loop: receive, evaluate, train, send.

    Long because it is the whole site loop in one place: receive, answer cross-site evaluation's
    ``submit_model`` / ``validate`` tasks, evaluate, train, send.
    """
    import numpy as np
    import torch
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    from fedimg.fl.nvflare.site_strategy import SiteStrategy
    from fedimg.fl.server.validation import SITE_KEY

    own = SiteStrategy(cc, site)  # SCAFFOLD's c_i, FedBN's norm layers (nothing for other strategies)
    local_sd: dict[str, Any] | None = None
    while flare.is_running():
        incoming = flare.receive()
        if incoming is None:
            break
        if flare.is_submit_model():  # cross-site evaluation: this site's last local model, weights only
            flare.send(_local_model(cc, site, local_sd))
            continue
        rnd = int(incoming.current_round or 0)
        if cc.dp and "privacy" not in data.state:
            data.state["privacy"] = site_privacy(cc, site, config, done_rounds=rnd)
        global_sd = {k: (v.detach().cpu() if hasattr(v, "detach") else torch.as_tensor(np.asarray(v)))
                     for k, v in incoming.params.items()}
        start_sd = own.start(global_sd, rnd)
        model.load_state_dict(start_sd)
        model.to(device)
        t_eval = time.perf_counter()
        val = task.evaluate(model, data, config)
        if flare.is_evaluate():  # cross-site evaluation of another model: metrics only, no training
            floats = make_payload({}, {}, num_samples=0, val=val, train={})[1]  # finite floats, "val_" prefixed
            flare.send(FLModel(metrics={k.removeprefix(VAL_PREFIX): v for k, v in floats.items()}))
            continue
        t_train = time.perf_counter()
        _share_round(ctx, global_sd)  # the other ranks train this round with this rank (DDP)
        with own.training(model, incoming.meta):
            train, n = task.train_one_round(model, data, config, epochs=cc.local_epochs,
                                            global_params=start_sd, prox_mu=cc.prox_mu)
        train = {**train, "seconds_train": time.perf_counter() - t_train, "seconds_eval": t_train - t_eval}
        local_sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        params, metrics, meta = _private_payload(cc, own.shared(start_sd), local_sd, n, val, train)
        own.finish(model, start_sd, meta, local_sd, rnd)
        meta[SITE_KEY] = site  # the server checks it against the site NVFlare delivered the update from
        params = _outgoing(cc, params, global_sd, meta, update_hook, f"{site} round {rnd + 1}")
        if cc.local_model_dir:
            _keep_local(Path(cc.local_model_dir) / f"{site}.safetensors", local_sd, rnd)
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, rnd)
        log.info("%s round %d: %s", site, rnd + 1, ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        flare.send(FLModel(params=params, params_type=ParamsType.DIFF if cc.send == "diff" else ParamsType.FULL,
                           metrics=metrics, meta=meta))


def _dist_context() -> Any:
    """This process's :class:`fedimg.engine.distributed.DistContext` under torchrun, else ``None``."""
    from fedimg.config import torchrun_rank_from_env

    rank, world, local = torchrun_rank_from_env()
    if world <= 1:
        return None
    from fedimg.engine.distributed import DistContext

    return DistContext(rank=rank, world_size=world, local_rank=local)


def _join_group(ctx: Any, device: Any) -> Any:
    if ctx is None:
        return device
    from fedimg.engine.distributed import init_process_group

    return init_process_group(ctx, device)


def _use_ddp(ctx: Any, data: Any) -> None:
    """The task's local rounds train a DistributedTrainer (DDP, DistributedSampler) on this rank."""
    from fedimg.engine.distributed import DistributedTrainer

    if not hasattr(data, "state") or not hasattr(data, "train_images"):
        raise ConfigError("only the brats task trains on several processes; drop --site-nproc")
    data.state["make_trainer"] = lambda model, d, config: DistributedTrainer(model, d, config, ctx)


def _share_round(ctx: Any, global_sd: dict[str, Any] | None) -> None:
    """Rank 0 hands a round's global weights (``None``: stop) to the other ranks."""
    if ctx is None:
        return
    import torch.distributed as dist

    dist.broadcast_object_list([global_sd], src=0)


def _follow_rounds(ctx: Any, task: Any, model: Any, data: Any, config: Any, cc: ClientConfig, device: Any) -> int:
    """A rank > 0: train every round rank 0 shares, in step with it (DDP); send nothing."""
    import torch.distributed as dist

    from fedimg.engine.distributed import leave_process_group

    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is None:
            break
        model.load_state_dict(box[0])
        model.to(device)
        task.train_one_round(model, data, config, epochs=cc.local_epochs, global_params=box[0], prox_mu=cc.prox_mu)
    leave_process_group()
    return 0


def _local_model(cc: ClientConfig, site: str, local_sd: dict[str, Any] | None) -> Any:
    """This site's last local model for cross-site evaluation (never under client-level DP: un-noised)."""
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    if cc.client_clip > 0:
        raise ConfigError(f"{site}: asked for its local model under client-level DP; "
                          "export the job with --crossval global")
    if local_sd is None:
        raise ConfigError(f"{site}: asked for its local model before it trained a round in this job")
    return FLModel(params=local_sd, params_type=ParamsType.FULL)


def _private_payload(cc: ClientConfig, global_sd: dict, local_sd: dict, n: int, val: dict, train: dict):
    """:func:`make_payload`, after checking DP-SGD really ran, with client-level DP's clipping."""
    if cc.dp and "dp_epsilon" not in train:
        raise ConfigError(f"task {cc.task!r} did not train with DP-SGD although the job asks for it")
    params, metrics, meta = make_payload(global_sd, local_sd, num_samples=n, val=val, train=train, send=cc.send)
    if cc.client_clip > 0:
        from fedimg.privacy import clip_update

        params, _ = clip_update(params, cc.client_clip)  # before anything leaves the site
    return params, metrics, meta


def _outgoing(cc: ClientConfig, params: dict, global_sd: dict, meta: dict, update_hook: Callable | None,
              where: str) -> dict:
    """The params to send: ``update_hook`` (tests) applied, then, under HE, the site's own screen of
    its update, last thing before it leaves (the server cannot screen ciphertexts):
    :func:`fedimg.privacy.check_own_update` with the server's thresholds (raises on failure)."""
    from fedimg.privacy import check_own_update

    params = update_hook(params) if update_hook is not None else params
    if not cc.he:
        return params
    own = check_own_update(params, global_sd, num_samples=int(meta["NUM_STEPS_CURRENT_ROUND"]),
                           max_rel_norm=cc.max_rel_norm, max_samples=cc.max_samples)
    log.info("%s: own update screened before encryption (norm %.4g, %.3gx the global model's)", where, own["norm"],
             own["rel_norm"])
    return params


def site_privacy(cc: ClientConfig, site: str, config: Any, *, done_rounds: int = 0) -> Any:
    """This site's :class:`fedimg.privacy.PatientDP`: budget over the task config's ``epochs``
    (the federation's ``rounds x local_epochs``); a resumed run (``done_rounds > 0``) counts the
    steps of the rounds already done as spent. Seeded by the DP seed and the site's name."""
    import zlib

    from fedimg.privacy import DPConfig, PatientDP

    dp = DPConfig.from_dict({**cc.dp, "seed": int(cc.dp.get("seed", 0)) + zlib.crc32(site.encode())})
    return PatientDP(dp, total_epochs=int(config.epochs), spent_epochs=done_rounds * cc.local_epochs)


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

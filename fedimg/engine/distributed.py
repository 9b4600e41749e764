"""One site's training on N processes: torch DistributedDataParallel, launched by torchrun.

``fedimg train --nproc N`` starts N copies of its worker with torch's own launcher
(:func:`launch` runs ``torch.distributed.run``, i.e. ``torchrun --standalone``); each
worker joins the process group (:func:`init_process_group`: gloo on the CPU, NCCL on
CUDA, one GPU per local rank) and trains a :class:`DistributedTrainer`:

* the model is wrapped in ``DistributedDataParallel`` (gradients averaged every step);
* each epoch's samples come from a seeded ``DistributedSampler`` (``set_epoch`` every
  epoch); rank ``r`` takes every N-th sample, so global batch ``s`` (the N per-rank
  batches of step ``s``) holds exactly the samples one process with the same global
  batch would draw at step ``s`` (same permutation, same order);
* each sample's crop, flips and intensity jitter come from its own generator, seeded by
  ``(seed, epoch, sample)`` (:func:`sample_seed`), so they do not depend on the rank
  that draws the sample;
* the per-process batch is the global batch / N (:func:`per_rank_batch` refuses a
  remainder); the epoch loss is averaged and the throughput summed over the ranks.

Rank 0 alone validates, writes checkpoints, metrics and logs; the others only train
(:func:`follow`). With equal per-rank batches (the number of samples per epoch a
multiple of the global batch) the loss curve equals the one-process curve up to the
order of floating-point sums; otherwise ``DistributedSampler`` pads the last step by
repeating samples. A rank that fails writes its one-line error to ``error_dir``;
:func:`launch` raises the first real failure as :class:`RankFailed` (never a rank that torchrun
stopped because another one had failed). A worker ends with :func:`leave_process_group` (a barrier
first when it finished) and :func:`exit_worker` (no interpreter shutdown beside gloo's threads).

>>> per_rank_batch(4, 2), backend_for("cpu"), backend_for("cuda:1")
(2, 'gloo', 'nccl')
>>> sampler_order(8, nproc=1, rank=0, seed=0, epoch=0)
[4, 0, 7, 3, 2, 5, 1, 6]
>>> sampler_order(8, nproc=2, rank=0, seed=0, epoch=0), sampler_order(8, nproc=2, rank=1, seed=0, epoch=0)
([4, 7, 2, 1], [0, 3, 5, 6])
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from fedimg.engine.loop import Trainer
from fedimg.errors import ConfigError, FedimgError

__all__ = ["DistContext", "RankFailed", "per_rank_batch", "backend_for", "sample_seed", "sampler_order",
           "init_process_group", "leave_process_group", "exit_worker", "DistributedTrainer", "follow", "launch",
           "torchrun_argv", "write_rank_error"]

log = logging.getLogger(__name__)


class RankFailed(FedimgError):
    """A training process failed; the message is its one-line error, prefixed by its rank."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code) or 1


@dataclass(frozen=True, kw_only=True)
class DistContext:
    """This process's place in the group: ``rank`` of ``world_size``, ``local_rank`` on this host.

    ``sync=False`` trains the rank's share of each global batch without DDP or any
    collective (a control: what the ranks would do if gradients were not averaged).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sync: bool = True

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ConfigError(f"bad process rank {self.rank} of {self.world_size} (local rank {self.local_rank}); "
                              "start the workers with torchrun (fedimg train --nproc N)")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def per_rank_batch(global_batch: int, nproc: int) -> int:
    """The per-process batch ``global_batch / nproc``; refuses a remainder with one line."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: use 1 or more processes")
    if global_batch % nproc:
        raise ConfigError(f"--batch-size {global_batch} does not divide over --nproc {nproc} processes; "
                          f"use a global batch that is a multiple of {nproc} (e.g. {nproc * max(1, global_batch // nproc)})")
    return global_batch // nproc


def backend_for(device: Any) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def sample_seed(seed: int, epoch: int, sample: int) -> int:
    """The augmentation seed of one sample of one epoch (independent of the rank drawing it)."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(epoch), int(sample)]).generate_state(1, np.uint64)[0] >> 1)


def sampler_order(num_samples: int, *, nproc: int, rank: int, seed: int, epoch: int) -> list[int]:
    """Rank ``rank``'s samples of epoch ``epoch``: a seeded ``DistributedSampler`` after ``set_epoch``."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(num_samples), num_replicas=nproc, rank=rank, shuffle=True, seed=int(seed),
                                 drop_last=False)
    sampler.set_epoch(int(epoch))
    return list(sampler)


def init_process_group(ctx: DistContext, device: Any) -> Any:
    """Join the torchrun group (``env://``); returns this rank's device (``cuda:<local_rank>`` on CUDA)."""
    import datetime

    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if ctx.sync and not dist.is_initialized():
        dist.init_process_group(backend_for(device), rank=ctx.rank, world_size=ctx.world_size,
                                timeout=datetime.timedelta(minutes=30))
    return device


def leave_process_group(*, sync: bool = True) -> None:
    """Leave the process group, if this process joined one (the end of every worker).

    ``sync=True`` (a rank that finished its work) first waits at a barrier for every rank, so that
    no rank exits while a collective, or rank 0's checkpoint writing, is still under way. A rank
    that failed passes ``sync=False``: its peers may be blocked in a collective that will never
    complete, so it leaves without waiting for them. The gloo backend's threads can outlive this
    (a DDP model keeps the backend alive): end the worker with :func:`exit_worker`.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def exit_worker(code: int) -> NoReturn:
    """End this torchrun worker with ``code`` now, skipping the interpreter's shutdown.

    The gloo backend's threads outlive :func:`leave_process_group` (a DDP model keeps the backend
    alive). If one of them takes the GIL while the interpreter shuts down (to free a Python-made
    tensor it still held), CPython ends that thread with ``pthread_exit``, whose unwinding through
    C++ aborts the process ("terminate called without an active exception", SIGABRT) after all
    its work was done, and torchrun stops the other ranks. Like :mod:`multiprocessing`'s children,
    the worker flushes its logs and streams and leaves with :func:`os._exit`: no shutdown, no
    window. Call it only when everything is written and closed (checkpoints and metrics are written
    atomically, TensorBoard's writer is closed) and the group is left.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more can reach it
            pass
    os._exit(int(code))


class DistributedTrainer(Trainer):
    """The 3-D trainer on one rank: DDP model, ``DistributedSampler`` order, per-sample augmentation.

    ``config.batch_size`` is the global batch; each step trains ``batch_size / world_size``
    samples here. With ``ctx.sync`` the process group must be initialised
    (:func:`init_process_group`).
    """

    def __init__(self, model: Any, data: Any, config: Any, ctx: DistContext) -> None:
        import torch

        super().__init__(model, data, config)
        self.ctx = ctx
        self.local_batch = per_rank_batch(int(config.batch_size), ctx.world_size)
        self.ddp = None
        self._reduced: Any = None  # the last epoch's all-reduced loss and rate
        if ctx.sync:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
            self.forward = torch.compile(self.ddp) if config.compile else self.ddp
        log.info("rank %d of %d: per-process batch %d (global %d), backend %s", ctx.rank, ctx.world_size,
                 self.local_batch, config.batch_size, backend_for(self.device) if ctx.sync else "none (no sync)")

    def epoch_batches(self) -> list[list[int]]:
        """This rank's share of the epoch: ``DistributedSampler`` order in per-rank batches."""
        if self.data.num_train == 0:
            raise ValueError("no training cases")
        order = sampler_order(self.samples_per_epoch, nproc=self.ctx.world_size, rank=self.ctx.rank,
                              seed=self.config.seed, epoch=self.epoch)
        b = self.local_batch
        return [order[i:i + b] for i in range(0, len(order), b)]

    def make_batch(self, batch: list[int]) -> tuple[Any, Any]:
        """Crops of the samples ``batch`` (sample ``s`` is case ``s % num_train``), each from its own generator."""
        import torch

        from fedimg.engine.augment import sample_batch

        d, cfg, xs, ys = self.data, self.config, [], []
        for s in batch:
            gen = torch.Generator().manual_seed(sample_seed(cfg.seed, self.epoch, s))
            x, y = sample_batch(d.train_images, d.train_regions, d.train_fg, [s % d.num_train], cfg, gen)
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    def train_epoch(self, **kw: Any) -> dict[str, float]:
        """One epoch on this rank; the loss is averaged and the throughput summed over the group."""
        import torch
        import torch.distributed as dist

        stats = super().train_epoch(**kw)
        if self.ctx.sync and self.ctx.world_size > 1:
            t = torch.tensor([stats["loss"], stats[self.rate_key]], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            self._reduced = t  # kept: freed by this thread later, never by a gloo worker at exit (leave_process_group)
            stats["loss"] = float(t[0]) / self.ctx.world_size
            stats[self.rate_key] = float(t[1])
        return stats


def follow(model: Any, trainer: Any, out: str | Path, *, resume: bool, fingerprint: str, epochs: int,
           stop_after: int | None) -> dict[str, Any]:
    """A rank other than 0: restore the run (read only) when resuming, then train in step, writing nothing."""
    if resume:
        from fedimg.engine.checkpoint import restore_run

        restore_run(out, model, trainer, fingerprint=fingerprint, best={})
    ran = 0
    while trainer.epoch < epochs and (stop_after is None or ran < stop_after):
        trainer.train_epoch()
        ran += 1
    return {"run": str(out), "epochs_run": ran, "epoch": trainer.epoch, "best": {}, "last": None, "telemetry": {}}


def write_rank_error(error_dir: str | Path, rank: int, exc: BaseException) -> None:
    """Record a rank's failure as one line for :func:`launch` (atomically), with the time it failed."""
    import time

    from fedimg.io import write_json

    message = str(exc) if isinstance(exc, FedimgError) else f"{type(exc).__name__}: {exc}"
    code = getattr(exc, "exit_code", 1)
    write_json(Path(error_dir) / f"rank{rank}.json",
               {"message": " ".join(message.split()), "exit_code": code, "time": time.time()})


#: torchrun's agent stops the other workers with SIGTERM (SIGKILL after its grace period) once one
#: has failed: a rank ended by these without an error of its own is a consequence, not a cause.
_STOP_SIGNALS = frozenset({15, 9})


def _how(code: int) -> str:
    """How a process ended: ``killed by signal 6 (SIGABRT)`` or ``exit code 1``."""
    import signal

    if code >= 0:
        return f"exit code {code}"
    try:
        name = f" ({signal.Signals(-code).name})"
    except ValueError:
        name = ""
    return f"killed by signal {-code}{name}"


def _rank_error(error_dir: Path, failures: dict) -> RankFailed:
    """The one error to show for a failed group: the rank that failed first on its own.

    ``failures`` maps rank to torchrun's ``ProcessFailure`` (``exitcode``, ``timestamp``), in the
    order torchrun saw them. First choice: a rank that wrote its error (:func:`write_rank_error`),
    the earliest by the time in its file; then a rank that died without one (a crash: an abort, a
    segfault, an exit code), the earliest torchrun saw; last, a rank torchrun stopped itself
    (:data:`_STOP_SIGNALS`). A crash that is not the named rank is added to the line, so a crash
    whose peers then raised (say, a lost connection) is never hidden.
    """
    from fedimg.io import read_json

    records = {r: read_json(error_dir / f"rank{r}.json") for r in failures if (error_dir / f"rank{r}.json").is_file()}
    seen = {r: i for i, r in enumerate(failures)}

    def kind(rank: int) -> int:
        code = failures[rank].exitcode
        return 0 if rank in records else 2 if code < 0 and -code in _STOP_SIGNALS else 1

    def order(rank: int) -> tuple:
        if rank in records:
            return (0, float(records[rank].get("time", float("inf"))), rank)
        return (kind(rank), float(getattr(failures[rank], "timestamp", 0)), seen[rank])

    first = min(failures, key=order)
    crashes = [r for r in sorted(failures, key=order) if r != first and kind(r) == 1]
    also = "".join(f"; rank {r} also failed, {_how(failures[r].exitcode)}" for r in crashes)
    if first in records:
        rec = records[first]
        return RankFailed(f"rank {first}: {rec['message']}{also}", rec.get("exit_code", 1))
    how = _how(failures[first].exitcode)
    return RankFailed(f"training process rank {first} failed without an error message ({how}){also}; "
                      "rerun with -vv to see its log")


def torchrun_argv(nproc: int) -> list[str]:
    """The torchrun command (this interpreter) that starts ``nproc`` local workers of a script given after it."""
    return [sys.executable, "-u", "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc-per-node={int(nproc)}"]


def launch(worker_argv: Sequence[str], *, nproc: int, error_dir: str | Path) -> None:
    """Run ``python <worker_argv>`` on ``nproc`` local processes with ``torch.distributed.run``.

    torchrun (``--standalone``: a local rendezvous on a free port) sets ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` for each worker, and stops the
    others when one fails. A failure is raised as the failed rank's one-line error
    (:func:`write_rank_error`) instead of torchrun's report.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args([*torchrun_argv(nproc)[4:], "--no-python", sys.executable, *worker_argv])
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)  # torchrun's own notes and failure report: replaced by the rank's one line
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        raise _rank_error(Path(error_dir), exc.failures) from None
    finally:
        logging.disable(previous)

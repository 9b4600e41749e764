"""``fedimg train --nproc 2``: DDP through torchrun (gloo) equals one process with the same global batch.

The two-process run goes through the real CLI and torch's launcher; the references run in
this process with the same sampler order and per-sample augmentation seeds: one process
taking whole global batches (must match), and rank 0's share trained without gradient
averaging (the control: must differ, so the comparison would catch DDP being off).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from fedimg.cli import main
from fedimg.engine.distributed import DistContext, per_rank_batch, sampler_order
from fedimg.engine.config import TrainConfig
from fedimg.errors import ConfigError


ARGS = ["--roi", "16", "16", "16", "--threads", "1", "--no-progress", "--allow-identifiable", "--amp", "fp32",
        "--val-fraction", "0", "--epochs", "3", "--batch-size", "2", "--seed", "3"]
CFG = TrainConfig(roi=(16, 16, 16), threads=1, allow_identifiable=True, amp="fp32", val_fraction=0.0, epochs=3,
                  batch_size=2, seed=3)
#: relative tolerance on each epoch's loss: float sums in another order (measured 1e-7 here; the control differs by 0.1-0.3)
RTOL = 1e-4


@pytest.fixture(scope="module")
def small_site(tmp_path_factory, case_maker) -> Path:
    root = tmp_path_factory.mktemp("ddp-site")
    for i in range(4):
        case_maker(root, f"Fd_{i:03d}", 5000 + i)
    return root


def _losses(run: Path) -> list[float]:
    return [e["loss"] for e in json.loads((run / "metrics.json").read_text())["epochs"]]


@pytest.fixture(scope="module")
def site_data(small_site):
    import torch

    from fedimg.cli._skip import site_cases
    from fedimg.engine.cache import prepare_site_data

    cases, _ = site_cases(small_site, skip=False, allow_identifiable=True)
    return prepare_site_data(cases, CFG, torch.device("cpu"))


def _reference(data, ctx: DistContext) -> tuple[list[float], dict, dict]:
    """Train in this process as the CLI's rank would (same seed, so the same initial weights)."""
    from fedimg.device import seed_everything
    from fedimg.engine.distributed import DistributedTrainer
    from fedimg.engine.models import build_model, model_kwargs

    seed_everything(CFG.seed)
    model = build_model(CFG.model, **model_kwargs(CFG))
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    trainer = DistributedTrainer(model, data, CFG, ctx)
    losses = [trainer.train_epoch()["loss"] for _ in range(CFG.epochs)]
    return losses, {k: v.detach().numpy() for k, v in model.state_dict().items()}, init


def _rel(a: dict, b: dict, init: dict) -> float:
    """||a - b|| relative to how far ``b`` moved from ``init`` (all weights as one vector)."""
    diff = sum(float(((a[k] - b[k]).astype(np.float64) ** 2).sum()) for k in b)
    moved = sum(float(((b[k] - init[k]).astype(np.float64) ** 2).sum()) for k in b)
    return (diff / moved) ** 0.5


def test_sampler_global_batches_equal_one_process():
    one = sampler_order(12, nproc=1, rank=0, seed=4, epoch=2)
    r0, r1 = (sampler_order(12, nproc=2, rank=r, seed=4, epoch=2) for r in (0, 1))
    for step in range(3):  # global batch 4 = 2 per rank
        assert sorted(r0[2 * step:2 * step + 2] + r1[2 * step:2 * step + 2]) == sorted(one[4 * step:4 * step + 4])
    assert sampler_order(12, nproc=1, rank=0, seed=4, epoch=3) != one  # set_epoch reshuffles


def test_per_rank_batch_refuses_remainder():
    assert per_rank_batch(6, 3) == 2
    with pytest.raises(ConfigError, match="multiple of 2"):
        per_rank_batch(3, 2)


def test_ddp_two_processes_match_one(small_site, site_data, tmp_path):
    run = tmp_path / "ddp"
    assert main(["-q", "train", "--data", str(small_site), "--out", str(run), *ARGS, "--nproc", "2"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert (run / "last.safetensors").is_file() and (run / "model.safetensors").is_file()
    assert json.loads((run / "config.json").read_text())["batch_size"] == 2  # the global batch
    ddp = _losses(run)

    one, w_one, init = _reference(site_data, DistContext(world_size=1, sync=False))
    np.testing.assert_allclose(ddp, one, rtol=RTOL)
    from safetensors.numpy import load_file

    w_ddp = load_file(str(run / "last.safetensors"))
    assert _rel(w_ddp, w_one, init) < 5e-3  # Adam's normalisation lifts float-order noise in tiny gradients

    # control: rank 0's half of each global batch without gradient averaging gives another curve
    alone, w_alone, _ = _reference(site_data, DistContext(world_size=2, rank=0, sync=False))
    assert not np.allclose(alone, one, rtol=100 * RTOL) and _rel(w_alone, w_one, init) > 0.1


def test_nproc_batch_not_divisible_one_line(small_site, tmp_path, capfd):
    run = tmp_path / "bad"
    assert main(["train", "--data", str(small_site), "--out", str(run), *ARGS, "--batch-size", "3", "--nproc", "2"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["fedimg: error: --batch-size 3 does not divide over --nproc 2 processes; use a global batch that "
                   "is a multiple of 2 (e.g. 2)"]
    assert not run.exists()


@pytest.mark.slow
def test_rank_error_reaches_terminal_as_one_line(tmp_path, capfd):
    empty = tmp_path / "empty-site"
    empty.mkdir()
    code = main(["-q", "train", "--data", str(empty), "--out", str(tmp_path / "r"), *ARGS, "--nproc", "2"])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    # both ranks find the site empty; the line names the one whose error came first
    assert len(err) == 1 and re.match(r"fedimg: error: rank [01]: ", err[0]) and str(empty) in err[0], err


def _failure(rank: int, exitcode: int):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file="")


def _error_file(folder: Path, rank: int, message: str, when: float) -> None:
    (folder / f"rank{rank}.json").write_text(json.dumps({"message": message, "exit_code": 1, "time": when}))


def test_rank_error_names_the_crash_not_the_rank_torchrun_stopped(tmp_path):
    """Rank 1 aborted; torchrun then stopped rank 0 with SIGTERM: the error names rank 1."""
    from fedimg.engine.distributed import _rank_error

    err = _rank_error(tmp_path, {0: _failure(0, -15), 1: _failure(1, -6)})
    assert str(err).startswith("training process rank 1 failed without an error message (killed by signal 6 (SIGABRT))")
    assert "rank 0" not in str(err)


def test_rank_error_names_the_earliest_error_and_never_hides_a_crash(tmp_path):
    from fedimg.engine.distributed import _rank_error

    _error_file(tmp_path, 0, "RuntimeError: Connection closed by peer", when=200.0)
    _error_file(tmp_path, 1, "case Fd_003: image holds NaN voxels", when=100.0)
    err = _rank_error(tmp_path, {0: _failure(0, 1), 1: _failure(1, 1)})
    assert str(err) == "rank 1: case Fd_003: image holds NaN voxels"

    (tmp_path / "rank1.json").unlink()  # rank 1 segfaulted; rank 0 then lost its connection and said so
    err = _rank_error(tmp_path, {0: _failure(0, 1), 1: _failure(1, -11)})
    assert str(err) == "rank 0: RuntimeError: Connection closed by peer; rank 1 also failed, killed by signal 11 (SIGSEGV)"


def test_launch_names_the_aborted_rank(tmp_path):
    """Through torchrun: rank 1 aborts at once, rank 0 would sleep a minute (torchrun stops it)."""
    from fedimg.engine.distributed import RankFailed, launch

    worker = tmp_path / "worker.py"
    worker.write_text("import os, resource, time\n"
                      "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
                      "if os.environ['RANK'] == '1':\n    os.abort()\n"
                      "time.sleep(60)\n")
    t0 = time.monotonic()
    with pytest.raises(RankFailed, match=r"^training process rank 1 failed without an error message "
                                         r"\(killed by signal 6 \(SIGABRT\)\); rerun"):
        launch([str(worker)], nproc=2, error_dir=tmp_path)
    assert time.monotonic() - t0 < 40  # rank 0 was stopped, not waited for


LEAVE_WORKER = """
import os, sys, time
sys.path.insert(0, {root!r})
import torch
from fedimg.engine.distributed import DistContext, init_process_group, leave_process_group
rank = int(os.environ["RANK"])
init_process_group(DistContext(rank=rank, world_size=2), torch.device("cpu"))
out = {out!r}
if rank == 0:
    time.sleep(1.0)  # rank 0 still validating and writing checkpoints
    open(os.path.join(out, "rank0-written"), "w").close()
leave_process_group(sync=True)
if rank == 1:
    open(os.path.join(out, "rank1-left"), "w").write(str(os.path.exists(os.path.join(out, "rank0-written"))))
"""


def test_a_finished_rank_leaves_only_when_every_rank_has_finished(tmp_path):
    """Rank 1 finishes first: it leaves the group (and exits) only after rank 0 has written its files."""
    from fedimg.engine.distributed import launch

    worker = tmp_path / "worker.py"
    worker.write_text(LEAVE_WORKER.format(root=str(Path(__file__).resolve().parents[2]), out=str(tmp_path)))
    launch([str(worker)], nproc=2, error_dir=tmp_path)
    assert (tmp_path / "rank1-left").read_text() == "True"


def test_a_failed_rank_leaves_without_waiting(monkeypatch):
    import torch.distributed as dist

    from fedimg.engine.distributed import leave_process_group

    calls: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    leave_process_group(sync=False)
    assert calls == ["destroy"]
    leave_process_group()
    assert calls == ["destroy", "barrier", "destroy"]


def test_exit_worker_flushes_and_ends_with_the_code_even_with_gloo_work_in_flight():
    """A worker ends through os._exit with its code: its logs and stdout still arrive, with a gloo all_reduce of a
    Python tensor still running (the interpreter's shutdown, where a gloo thread taking the GIL aborts, never runs)."""
    from _fresh_python import run_python

    code = ("import logging, os, socket, sys\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
            "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))\n"
            "import torch, torch.distributed as dist\n"
            "from fedimg.engine.distributed import exit_worker\n"
            "logging.basicConfig(stream=sys.stderr, level=logging.INFO); logging.getLogger('w').info('logged')\n"
            "dist.init_process_group('gloo', rank=0, world_size=1)\n"
            "t = torch.ones(1 << 20); work = dist.all_reduce(t, async_op=True); del t, work\n"
            "sys.stdout.write('unflushed')\n"
            "exit_worker(3)\n")
    run = run_python(code, timeout=120, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 3, run.stderr[-800:]
    assert run.stdout == "unflushed" and "logged" in run.stderr and "terminate called" not in run.stderr

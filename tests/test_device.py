"""fedimg.device: the device resolved once, thread counts, seeding, bf16 support."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fedimg.device import bf16_supported, configure_threads, resolve_device, seed_everything
from fedimg.errors import ConfigError

CUDA = torch.cuda.is_available()


def test_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["auto", "AUTO", "", None])
def test_auto_picks_cuda_only_when_available(spec):
    dev = resolve_device(spec) if spec is not None else resolve_device()
    assert dev.type == ("cuda" if CUDA else "cpu")
    if CUDA:
        assert dev.index is not None


@pytest.mark.parametrize("spec", ["gpu:0", "tpu", "mps", "cpu:0x"])
def test_bad_string_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="is not understood; use auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


@pytest.mark.skipif(CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="no CUDA GPU is visible to torch; use --device cpu or auto"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["cuda0", "cuda:x", "cuda:-1"])
def test_malformed_cuda_is_a_config_error(spec):
    """Without a GPU the missing GPU is named first; with one, the string is not understood."""
    message = "is not understood; use auto, cpu, cuda or cuda:N" if CUDA else "no CUDA GPU is visible to torch"
    with pytest.raises(ConfigError, match=message):
        resolve_device(spec)


@pytest.mark.gpu
def test_cuda_on_a_gpu():
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    n = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"only {n} GPU"):
        resolve_device(f"cuda:{n}")
    assert isinstance(bf16_supported(torch.device("cuda", 0)), bool)


@pytest.fixture
def _restore_threads():
    import numba

    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


@pytest.mark.usefixtures("_restore_threads")
@pytest.mark.parametrize(("asked", "used"), [(1, 1), (3, 3), (0, 1), (-2, 1)])
def test_configure_threads_sets_torch_and_numba(asked, used):
    import numba

    assert configure_threads(asked) == used
    assert torch.get_num_threads() == used
    assert numba.get_num_threads() == min(used, numba.config.NUMBA_NUM_THREADS)


@pytest.mark.usefixtures("_restore_threads")
def test_configure_threads_default_is_the_cpus_this_process_may_use():
    import os

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert configure_threads() == expected
    assert torch.get_num_threads() == expected


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_seed_everything_makes_draws_repeat():
    seed_everything(1234)
    first = _draws()
    seed_everything(1234)
    assert _draws() == first
    seed_everything(1235)
    assert _draws() != first


def test_seed_everything_takes_seeds_beyond_32_bits():
    seed_everything(2**40 + 5)
    first = _draws()
    seed_everything(2**40 + 5)
    assert _draws() == first


def test_bf16_supported_on_cpu_is_a_bool():
    assert isinstance(bf16_supported(torch.device("cpu")), bool)
    assert isinstance(bf16_supported(resolve_device("cpu")), bool)


def test_server_fold_threads_auto_and_explicit():
    from fedimg.device import SMALL_SERVER_CPUS, server_fold_threads

    assert server_fold_threads(0, cpus=1) == server_fold_threads(0, cpus=SMALL_SERVER_CPUS) == 1
    assert server_fold_threads(0, cpus=SMALL_SERVER_CPUS + 1) == SMALL_SERVER_CPUS + 1
    assert server_fold_threads(2, cpus=64) == 2


def test_set_launch_threads_is_per_thread_and_capped():
    import threading

    import numba

    from fedimg.device import set_launch_threads

    main_count = numba.get_num_threads()
    got = {}
    t = threading.Thread(target=lambda: got.update(n=set_launch_threads(10_000)))
    t.start()
    t.join()
    assert got["n"] == numba.config.NUMBA_NUM_THREADS  # capped at numba's pool
    assert numba.get_num_threads() == main_count  # the main thread is untouched

"""fedavg / WeightedAccumulator: every host backend against the float64 definition."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _kernels_helpers import HOST_BACKENDS, U64, assert_mean_close, ref_mean, updates  # noqa: E402

from fedimg.kernels import MODES, WeightedAccumulator, fedavg  # noqa: E402

# P not a multiple of any block size, K = 1, several K, large enough to reach numba
CASES = [(1, 1), (1, 70001), (3, 70001), (5, 1031), (16, 40000)]


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("k,n", CASES)
@pytest.mark.parametrize("mode", MODES)
def test_fedavg_matches_reference(backend, k, n, mode, rng):
    us = updates(rng, k, n)
    before = [u.copy() for u in us]
    w = rng.uniform(0.5, 20, size=k)
    got = fedavg(us, w, mode=mode, block=3, backend=backend)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (n,)
    assert_mean_close(got, us, w)
    for u, b in zip(us, before):
        np.testing.assert_array_equal(u, b)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_zero_weights_are_skipped_even_with_nan(backend, rng):
    us = updates(rng, 4, 50000)
    us[1][:] = np.nan
    got = fedavg(us, [2, 0, 1, 0], backend=backend)
    assert_mean_close(got, us, [2, 0, 1, 0])  # zero weights: terms left out
    with pytest.raises(ValueError, match="zero"):
        fedavg(us, [0, 0, 0, 0], backend=backend)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_half_inputs_accumulate_in_float32(backend, dtype, rng):
    n = 40003
    base = [torch.from_numpy(u) for u in updates(rng, 3, n)]
    us = [t.to(getattr(torch, dtype)) for t in base]
    w = [1.0, 2.0, 5.0]
    got = fedavg(us, w, backend=backend)
    assert isinstance(got, torch.Tensor)
    assert got.dtype == (torch.float64 if dtype == "float64" else torch.float32)
    exact = ref_mean([u.double().numpy() for u in us], w)
    assert_mean_close(got.double().numpy(), [u.double().numpy() for u in us], w)  # float32 accumulation (float64: tighter)
    # the float32 sum of 3 half-precision updates is far better than a half-precision sum
    if dtype == "float16":
        naive = (us[0] * 1.0 + us[1] * 2.0 + us[2] * 5.0) / 8.0
        assert np.abs(got.double().numpy() - exact).max() < np.abs(naive.double().numpy() - exact).max()


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("block", [1, 3])
def test_accumulator_streaming_matches_fedavg(backend, block, rng):
    n = 70001
    us = updates(rng, 7, n)
    w = rng.uniform(0, 10, size=7)
    w[2] = 0.0
    acc = WeightedAccumulator(n, block=block, backend=backend)
    for u, wk in zip(us, w):
        acc.add(u, wk)
    # 7 non-negative float64 weights summed in some order, twice: 2 * 6 U64 relative
    assert acc.count == 7 and acc.total_weight == pytest.approx(w.sum(), rel=2 * 6 * U64, abs=0)
    r1 = acc.result()
    assert_mean_close(r1, us, w)
    r2 = acc.result()  # result() is repeatable and does not consume the sum
    np.testing.assert_array_equal(r1, r2)
    acc.reset()
    assert acc.count == 0 and acc.total_weight == 0.0
    acc.add(us[0], 3.0)
    assert_mean_close(acc.result(), [us[0]], [3.0])  # (3 u) / 3 in float32


def test_accumulator_float64_and_validation(rng):
    acc = WeightedAccumulator(10, dtype=np.float64)
    with pytest.raises(ValueError, match="no update"):
        acc.result()
    with pytest.raises(ValueError, match="10"):
        acc.add(np.zeros(11, np.float32), 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        acc.add(np.zeros(10, np.float32), -1.0)
    with pytest.raises(TypeError, match="float"):
        acc.add(np.zeros(10, np.int32), 1.0)
    u = rng.standard_normal(10)
    acc.add(u, 2.0)
    assert acc.result().dtype == np.float64
    with pytest.raises(ValueError):
        WeightedAccumulator(10, device="tpu")


def test_fedavg_argument_errors(rng):
    us = updates(rng, 2, 5)
    with pytest.raises(ValueError, match="2 updates"):
        fedavg(us, [1.0])
    with pytest.raises(ValueError, match="same length"):
        fedavg([us[0], us[1][:4]], [1, 1])
    with pytest.raises(ValueError, match="finite"):
        fedavg(us, [1, np.nan])
    with pytest.raises(ValueError, match="mode"):
        fedavg(us, [1, 1], mode="magic")
    with pytest.raises(TypeError, match="mixes"):
        fedavg([us[0], torch.from_numpy(us[1])], [1, 1])


def test_many_tiny_tensors_model_round(rng):
    """A DenseNet-like state dict of 600 small tensors through pack -> fedavg -> unpack."""
    from fedimg.kernels import pack, unpack

    sds = [{f"t{i}": rng.standard_normal(int(rng.integers(1, 40))).astype(np.float32) for i in range(600)}]
    sds.append({k: v + 1 for k, v in sds[0].items()})
    flats = [pack(sd)[0] for sd in sds]
    layout = pack(sds[0])[1]
    avg = unpack(fedavg(flats, [1, 1]), layout)
    for k, v in sds[0].items():
        assert_mean_close(avg[k], [v, sds[1][k]], [1, 1])  # sds[1] holds the float32 v + 1


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_fedavg_into_out_buffer(backend, rng):
    us = updates(rng, 3, 40001)
    buf = np.full(40001, 7.0, np.float32)
    got = fedavg(us, [1, 2, 3], out=buf, backend=backend)
    assert got is buf
    assert_mean_close(buf, us, [1, 2, 3])
    tbuf = torch.zeros(40001)
    assert fedavg([torch.from_numpy(u) for u in us], [1, 2, 3], out=tbuf, backend=backend) is tbuf
    assert_mean_close(tbuf.numpy(), us, [1, 2, 3])
    np.testing.assert_array_equal(tbuf.numpy(), buf)  # same kernel, same order per element: bit-equal
    with pytest.raises(ValueError, match="float32"):
        fedavg(us, [1, 1, 1], out=np.zeros(40001, np.float64))
    with pytest.raises(TypeError, match="torch_cpu"):
        fedavg(us, [1, 1, 1], out=tbuf)

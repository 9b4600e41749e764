"""pack / unpack / Layout: bit-exact round trips, integer tail rule, JSON."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.kernels import Layout, fedavg, pack, unpack


def _bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.Linear(4, 2))


def test_round_trip_torch_state_dict_bit_exact():
    sd = _bn_model().state_dict()
    sd["1.num_batches_tracked"] += 12345
    flat, layout = pack(sd)
    assert flat.dtype == np.float32 and flat.ndim == 1
    assert layout.source == "torch" and layout.names[-1] == "1.num_batches_tracked"
    out = unpack(flat, layout)
    assert set(out) == set(sd)
    for k, v in sd.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        assert torch.equal(out[k], v), k


def test_round_trip_half_types_and_numpy():
    rng = np.random.default_rng(1)
    sd = {
        "h": torch.from_numpy(rng.standard_normal((3, 5)).astype(np.float16)),
        "b": torch.randn(7, dtype=torch.bfloat16),
        "f": torch.randn(2, 2),
        "flag": torch.tensor([True, False]),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
    }
    flat, layout = pack(sd)
    out = unpack(flat, layout)
    for k, v in sd.items():
        assert out[k].dtype == v.dtype and torch.equal(out[k], v), k
    npd = {"a": rng.standard_normal(4).astype(np.float32), "c": np.array([1, 2], np.int32)}
    flat, layout = pack(npd)
    back = unpack(flat, layout)
    assert isinstance(back["a"], np.ndarray) and back["c"].dtype == np.int32
    np.testing.assert_array_equal(back["a"], npd["a"])
    np.testing.assert_array_equal(back["c"], npd["c"])


def test_float64_keeps_exactness_and_inputs_untouched():
    a = np.random.default_rng(2).standard_normal(9)
    keep = a.copy()
    flat, layout = pack({"a": a})
    assert flat.dtype == np.float64 and layout.flat_dtype == "float64"
    np.testing.assert_array_equal(unpack(flat, layout)["a"], keep)
    np.testing.assert_array_equal(a, keep)


def test_integer_too_large_for_float32_is_refused():
    with pytest.raises(ValueError, match="float64"):
        pack({"n": np.array([2**25 + 1], np.int64)})
    flat, layout = pack({"n": np.array([2**25 + 1], np.int64)}, dtype=np.float64)
    assert int(unpack(flat, layout)["n"][0]) == 2**25 + 1


def test_layout_json_and_validation():
    flat, layout = pack(_bn_model().state_dict())
    again = Layout.from_json(layout.to_json())
    assert again == layout
    assert layout.slice("0.weight") == slice(0, 4 * 27)
    with pytest.raises(ValueError):
        Layout(names=("a",), shapes=((2,),), dtypes=("float32",), offsets=(1,), size=3, float_size=3)
    with pytest.raises(ValueError, match="layout expects"):
        unpack(flat[:-1], layout)


def test_integer_tail_takes_max_not_mean():
    sds = []
    for steps in (3, 10, 7):
        sd = _bn_model().state_dict()
        sd["1.num_batches_tracked"].fill_(steps)
        sd["0.weight"].fill_(float(steps))
        sds.append(sd)
    packed = [pack(sd) for sd in sds]
    layout = packed[0][1]
    avg = fedavg([f for f, _ in packed], [1, 1, 1], layout=layout)
    out = unpack(avg, layout)
    assert int(out["1.num_batches_tracked"]) == 10
    assert torch.allclose(out["0.weight"], torch.full_like(out["0.weight"], 20 / 3))
    # without a layout the tail is averaged, and unpack still gives an integer
    plain = unpack(fedavg([f for f, _ in packed], [1, 1, 1]), layout)
    assert plain["1.num_batches_tracked"].dtype == torch.int64
    assert int(plain["1.num_batches_tracked"]) == 7


def test_flat_parts_are_the_packed_buffer_without_packing():
    from fedimg.kernels.layout import flat_parts, layout_of, slice_parts

    sd = _bn_model().state_dict()
    sd["extra.half"] = torch.randn(5).to(torch.bfloat16)
    flat, layout = pack(sd)
    assert layout_of(sd) == layout
    parts = flat_parts(sd, layout)
    assert [p.size for p in parts] == [int(np.prod(s)) for s in layout.shapes]
    np.testing.assert_array_equal(np.concatenate(parts), flat)
    w = sd["0.weight"].numpy()
    assert np.shares_memory(parts[layout.names.index("0.weight")], w)  # float tensors: views, no copy
    for lo, hi in [(0, layout.size), (3, 4), (100, 300), (layout.float_size, layout.size), (5, 5)]:
        got = slice_parts(parts, lo, hi)
        np.testing.assert_array_equal(np.concatenate(got) if got else np.zeros(0), flat[lo:hi])
    with pytest.raises(ValueError, match="float64"):
        flat_parts({"n": np.array([2**25 + 1], np.int64)}, layout_of({"n": np.array([0], np.int64)}))


def test_unpack_without_copies_gives_views():
    flat, layout = pack({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(4, np.int64)})
    out = unpack(flat, layout, copy=False)
    assert np.shares_memory(out["a"], flat) and out["n"].dtype == np.int64 and int(out["n"]) == 4
    assert not np.shares_memory(unpack(flat, layout)["a"], flat)

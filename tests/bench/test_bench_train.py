"""The training benchmark: ``fedimg bench train`` (fedimg's engine alone) and
``benchmarks/train_throughput.py`` (engine vs MONAI's BraTS tutorial loop and fast-training
recipe). These check what is measured and reported, not how fast anything is."""

from __future__ import annotations

import json

import pytest

TINY = ["--roi", "32", "32", "32", "--runs", "1", "--threads", "1"]


def test_fedimg_bench_train_measures_the_engine_alone(site, tmp_path, capsys):
    """Voxels/s, cases/s and step time with their spread; GPU utilisation and memory skipped on a CPU."""
    from fedimg.cli import main

    out = tmp_path / "train.json"
    assert main(["-q", "bench", "train", "--data", str(site), *TINY, "--runs", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "fedimg engine" in table and "cases/s" in table and "s/step" in table and "tutorial" not in table
    assert "GPU telemetry: skipped" in table and "GPU memory: skipped" in table
    assert res["benchmark"] == "train" and res["device"] and res["telemetry"]["available"] is False
    assert res["gpu_memory"] == "skipped: no CUDA device" and res["engine_gpu_mem_peak_mib"] is None
    (name, eng), = res["results"].items()
    assert name.startswith("fedimg engine") and eng["settings"]["optimizer"].startswith("AdamW")
    assert len(eng["runs"]) == 2 and all(r["steps"] == 2 and r["samples"] == 4 for r in eng["runs"])
    sp = eng["voxels_per_s_spread"]
    assert sp["runs"] == 2 and sp["min"] <= sp["median"] <= sp["max"] and eng["voxels_per_s"] == sp["median"]
    assert res["engine_cases_per_s"] == pytest.approx(eng["cases_per_s"]["median"]) and res["engine_cases_per_s"] > 0
    assert res["engine_step_s"] == pytest.approx(eng["step_s"]["median"]) and res["engine_step_s"] > 0
    assert eng["setup_s"] > 0 and eng["warmup_epoch_s"] > 0


def test_measure_interleaves_loops_and_keeps_every_run():
    """One warm-up epoch per loop, then the loops alternate epoch by epoch; ratios are run by run."""
    import torch

    from fedimg.bench.train import measure, ratio_spread

    calls = []

    class Loop:
        setup_s, loss = 0.0, 0.0

        def __init__(self, name, voxels):
            self.name, self.voxels = name, voxels

        def epoch(self):
            calls.append(self.name)
            return {"voxels": self.voxels, "samples": 2, "steps": 1}

    res = measure([Loop("a", 10), Loop("b", 20)], 3, torch.device("cpu"))
    assert calls == ["a", "b"] * 4
    assert [len(r["runs"]) for r in res] == [3, 3] and all(r["gpu_mem_peak_mib"] is None for r in res)
    q = ratio_spread(res[1], res[0], key="voxels")
    assert q == {"median": 2.0, "min": 2.0, "max": 2.0, "runs": 3}


def test_peer_amp_is_cuda_only(site, benchmark_script):
    """The tutorials' AMP (fp16 + GradScaler) is refused on a CPU: a CPU peer runs fp32 or bf16."""
    import torch

    from fedimg.data import discover

    benchmark_script("train_throughput")
    from _train_peers import TutorialLoop

    with pytest.raises(ValueError, match="CUDA-only"):
        TutorialLoop(discover(site), roi=(32, 32, 32), batch_size=2, init_filters=8, device=torch.device("cpu"),
                     epochs=1, precision="amp", workers=0)


def test_recipe_cache_threads_load_every_channel(site, benchmark_script):
    """The fast recipe caches in 4 threads through one ``Compose``: its loader is marked thread-unsafe
    (copied per call), so no thread gets another's file list (stock ``LoadImaged`` gave 1-channel
    images now and then, and the batch failed to collate)."""
    from monai.data import CacheDataset, set_track_meta
    from monai.transforms import Compose, ThreadUnsafe

    from fedimg.data import discover

    benchmark_script("train_throughput")
    import _train_peers as tp

    cases = discover(site, require_labels=True)
    steps = tp._deterministic(cases, (32, 32, 32))
    assert isinstance(steps[0], ThreadUnsafe)
    set_track_meta(True)
    for _ in range(8):  # measured with the stock loader: 9 of 240 items (30 cachings of 8 cases) had 1 channel
        ds = CacheDataset(data=tp._datalist(cases), transform=Compose(steps), cache_rate=1.0, num_workers=4,
                          progress=False)
        assert [tuple(ds[i]["image"].shape[:1]) for i in range(len(ds))] == [(4,)] * len(cases)


def test_train_throughput_times_both_peers_and_checks_bf16(site, tmp_path, capsys, benchmark_script):
    """``benchmarks/train_throughput.py``: tutorial loop and fast recipe (fp32 and bf16 on a CPU) and the
    engine, interleaved, with setup, settings (sources at a commit), ratios with spread and the Dice check."""
    script = benchmark_script("train_throughput")
    out = tmp_path / "train.json"
    argv = ["--data", str(site), *TINY, "--peer-workers", "1", "--quality-epochs", "1", "--json", str(out)]
    assert script.main(argv) == 0
    res = json.loads(out.read_text())
    table = capsys.readouterr().out
    names = list(res["results"])
    assert [n.split(") ", 1)[1] for n in names] == [
        "MONAI BraTS tutorial loop, fp32 (as written on a CPU)", "MONAI BraTS tutorial loop, bf16 autocast",
        "MONAI fast-training recipe, fp32 (AMP is CUDA-only)", "MONAI fast-training recipe, bf16 autocast",
        "fedimg engine (bf16)" if res["bf16_supported"] else "fedimg engine (fp32)"]
    tut, fast = res["results"][names[0]], res["results"][names[2]]
    assert res["monai_tutorials_commit"] in tut["settings"]["source"]
    assert "num_workers=1" in tut["settings"]["loader"] and "ThreadDataLoader" in fast["settings"]["loader"]
    assert fast["settings"]["set_track_meta"] is False and "CacheDataset" in fast["settings"]["dataset"]
    assert fast["setup_s"] > 0 and all(r["steps"] == 2 for r in fast["runs"])
    for name, r in res["results"].items():  # same work: same steps and crops on every side
        assert [x["steps"] for x in r["runs"]] == [2] and [x["samples"] for x in r["runs"]] == [4], name
        assert r["voxels_per_s"] > 0 and r["voxels_per_cpu_s"] > 0
    eng = names[-1]
    assert res["ratios_engine_over"][eng]["median"] == pytest.approx(1.0)
    assert res["ratios_engine_over"][names[0]]["median"] == pytest.approx(
        res["results"][eng]["voxels_per_s"] / tut["voxels_per_s"])
    assert "engine / (a) MONAI BraTS tutorial loop" in table and "CPU time" in table
    q = res["quality_bf16_vs_fp32"]
    assert q["epochs"] == 1 and q["val_cases"] >= 1 and "quality: held-out Dice" in table
    for amp in ("fp32", "bf16"):
        assert 0.0 <= q[amp]["dice_mean"] <= 1.0
    assert q["bf16_minus_fp32"]["dice_mean"] == pytest.approx(q["bf16"]["dice_mean"] - q["fp32"]["dice_mean"])


@pytest.mark.gpu
def test_fedimg_bench_train_reports_gpu_utilisation_and_memory(site, tmp_path):
    from fedimg.cli import main

    out = tmp_path / "train.json"
    assert main(["-q", "bench", "train", "--data", str(site), "--device", "cuda", "--roi", "32", "32", "32",
                 "--runs", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["device_type"] == "cuda" and res["engine_gpu_mem_peak_mib"] > 0
    assert res["telemetry"]["available"] is True and res["engine_gpu_util_mean"] is not None


def test_train_profile_breaks_a_step_down_and_times_each_option(site, tmp_path, capsys, benchmark_script):
    """``benchmarks/train_profile.py``: op shares per precision sum to 100 %, every option timed."""
    script = benchmark_script("train_profile")
    out = tmp_path / "profile.json"
    assert script.main(["--data", str(site), "--roi", "16", "--runs", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for share in res["op_share_percent"].values():
        assert sum(share.values()) == pytest.approx(100.0, abs=0.5) and share["convolution backward"] > 0
    assert set(res["step_cpu_s"]) == set(script.OPTIONS) and res["step_cpu_s"]["bf16"]["vs_bf16"] == 1.0
    assert res["data_path_cpu_s"] > 0 and "s/step" in capsys.readouterr().out

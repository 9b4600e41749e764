"""fedimg train / evaluate / predict through the CLI: outputs, exact resume, affine round trip, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from fedimg.cli import main

TRAIN = ["--roi", "32", "32", "32", "--threads", "1", "--no-progress", "--allow-identifiable"]


def _train(site, out, *extra):
    return main(["-q", "train", "--data", str(site), "--out", str(out), *TRAIN, *extra])


@pytest.fixture(scope="module")
def run_dir(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "site-a"
    assert _train(site, out, "--epochs", "3") == 0
    return out


def test_train_writes_run_folder(run_dir, site, hashed):
    for name in ("model.safetensors", "model.json", "last.safetensors", "last.json", "config.json", "metrics.json",
                 "telemetry.json", "last.state.safetensors"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    for e in metrics["epochs"]:
        assert {"loss", "dice_tc", "dice_wt", "dice_et", "dice_mean", "voxels_per_s", "lr"} <= set(e)
        assert 0.0 <= e["dice_wt"] <= 1.0 and e["voxels_per_s"] > 0
    best = max(metrics["epochs"], key=lambda e: e["dice_mean"])
    assert metrics["best"]["epoch"] == best["epoch"]
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["model"] == "segresnet" and meta["epoch"] == best["epoch"] and len(meta["data_fingerprint"]) == 64
    assert meta["config"]["roi"] == [32, 32, 32] and len(meta["val_cases"]) == 2
    tel = json.loads((run_dir / "telemetry.json").read_text())
    assert tel["summary"]["available"] is False  # CPU: silent no-op
    check = hashed(site)
    assert _train(site, run_dir.parent / "again", "--epochs", "1") == 0
    check.assert_unchanged()


def test_resume_continues_exactly(site, tmp_path, run_dir):
    out = tmp_path / "r"
    assert _train(site, out, "--epochs", "3", "--stop-after", "2") == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"][-1]["epoch"] == 2
    assert _train(site, out, "--epochs", "3", "--resume") == 0
    a = json.loads((out / "metrics.json").read_text())["epochs"]
    b = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    assert (out / "last.safetensors").read_bytes() == (run_dir / "last.safetensors").read_bytes()
    assert [(e["loss"], e["dice_mean"]) for e in a] == [(e["loss"], e["dice_mean"]) for e in b]


def test_evaluate_writes_csv_and_json(run_dir, other_site, tmp_path, hashed):
    check = hashed(other_site, run_dir / "model.safetensors")
    assert main(["-q", "evaluate", "--model", str(run_dir), "--data", str(other_site), "--out", str(tmp_path / "ev"),
                 "--threads", "1"]) == 0
    check.assert_unchanged()
    rows = list(csv.DictReader((tmp_path / "ev" / "dice.csv").open()))
    assert [r["case_id"] for r in rows] == ["Fy_000", "Fy_001", "Fy_002", "mean"]
    res = json.loads((tmp_path / "ev" / "dice.json").read_text())
    assert res["num_cases"] == 3 and len(res["per_case"]) == 3
    for k in ("dice_tc", "dice_wt", "dice_et", "dice_mean"):
        assert 0.0 <= res[k] <= 1.0
        assert float(rows[-1][k]) == pytest.approx(res[k], abs=1e-5)
    assert res["dice_wt"] == pytest.approx(np.mean([r["dice_wt"] for r in res["per_case"]]))


def test_predict_keeps_affine_and_shape(run_dir, tmp_path, hashed, case_maker):
    rot = np.array([[0.0, -2.2, 0.3, 40.5], [1.9, 0.0, 0.1, -61.25], [0.2, 0.1, 2.5, 17.0], [0, 0, 0, 1]])
    case = case_maker(tmp_path / "oblique", "Ob_001", seed=5, shape=(44, 50, 36), affine=rot)
    check = hashed(case)
    out = tmp_path / "pred.nii.gz"
    assert main(["-q", "predict", "--model", str(run_dir), "--case", str(case), "-o", str(out), "--threads", "1"]) == 0
    check.assert_unchanged()
    ref, pred = nib.load(str(case / "Ob_001_t1.nii.gz")), nib.load(str(out))
    assert pred.shape == ref.shape == (44, 50, 36)
    assert np.array_equal(pred.affine, ref.affine)
    assert np.array_equal(pred.header.get_sform(), ref.header.get_sform())
    assert np.allclose(pred.header.get_qform(), ref.header.get_qform(), atol=1e-5)
    labels = np.asarray(pred.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 4}


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_bad_inputs_exit_cleanly(site, run_dir, tmp_path, capsys, hashed):
    check = hashed(site, run_dir / "model.safetensors")
    assert _train(tmp_path / "nope", tmp_path / "o1", "--epochs", "1") == 2
    assert "nope" in _err(capsys)[-1]
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tmp_path / "o2", "--epochs", "1") == 2
    assert "no cases" in _err(capsys)[-1]
    assert main(["-q", "train", "--data", str(site), "--out", str(tmp_path / "o3"), "--epochs", "1"]) == 2
    assert "--allow-identifiable" in _err(capsys)[-1]
    assert _train(site, tmp_path / "o4", "--epochs", "1", "--resume") == 2
    assert "resume" in _err(capsys)[-1]
    assert _train(site, run_dir, "--epochs", "1") == 2  # would overwrite a run
    assert "already holds a training run" in _err(capsys)[-1]
    assert _train(site, site / "runs", "--epochs", "1") == 2  # output inside the input data
    assert _train(site, tmp_path / "o5", "--epochs", "1", "--device", "cuda:7") == 2
    assert main(["-q", "evaluate", "--model", str(tmp_path / "norun"), "--data", str(site)]) == 2
    assert "no checkpoint" in _err(capsys)[-1]
    t1 = site / "Fx_000" / "Fx_000_t1.nii.gz"
    assert main(["-q", "predict", "--model", str(run_dir), "--case", str(site / "Fx_000"), "-o", str(t1)]) == 2
    assert "input" in _err(capsys)[-1]
    check.assert_unchanged()
    assert not (site / "runs").exists()


def test_corrupt_case_is_named(tmp_path, capsys, case_maker):
    bad = tmp_path / "bad"
    case_maker(bad, "Cc_000", seed=1)
    case_maker(bad, "Cc_001", seed=2)
    f = bad / "Cc_001" / "Cc_001_flair.nii.gz"
    f.write_bytes(f.read_bytes()[:200])  # truncated gzip
    assert _train(bad, tmp_path / "o", "--epochs", "1") == 2
    assert "Cc_001_flair.nii.gz" in _err(capsys)[-1]


def test_cli_subprocess_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fedimg", "train", "--data", str(tmp_path / "missing"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "missing" in r.stderr.strip().splitlines()[-1]

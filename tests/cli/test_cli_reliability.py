"""Reliability at the CLI: outputs checked before any work, pre-flight of every site before NVFlare,
``--skip-bad-cases`` reported explicitly, ``predict`` on an MSD 4-D image."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _fresh_python import run_python
from fedimg.cli import main

AFFINE = np.diag([-2.0, 2.0, 2.0, 1.0])


def _case(root: Path, cid: str, seed: int, shape=(24, 24, 20)) -> Path:
    """A head-like ellipsoid with a bright blob (BraTS 2021 naming)."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    head = (((g - c) / (c - 2)) ** 2).sum(0) <= 1.0
    label = np.zeros(shape, np.uint8)
    label[((g - c) ** 2).sum(0) <= 9] = 2
    label[((g - c) ** 2).sum(0) <= 3] = 4
    folder = root / cid
    folder.mkdir(parents=True)
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        img = (100.0 + 50 * i * (label > 0) + rng.normal(0, 5, shape)) * head
        nib.save(nib.Nifti1Image(img.astype(np.float32), AFFINE), str(folder / f"{cid}_{m}.nii.gz"))
    nib.save(nib.Nifti1Image(label, AFFINE), str(folder / f"{cid}_seg.nii.gz"))
    return folder


# every command with an output location, with its other required options (their inputs need not exist:
# the output is checked first)
COMMANDS = [
    ["deface", "{missing}/in.nii.gz", "-o", "{out}/x.nii.gz"],
    ["train", "--data", "{missing}", "--out", "{out}/run"],
    ["evaluate", "--model", "{missing}", "--data", "{missing}", "--out", "{out}/ev"],
    ["predict", "--model", "{missing}", "--case", "{missing}", "-o", "{out}/p.nii.gz"],
    ["simulate", "--data", "{missing}", "--out", "{out}/run"],
    ["study", "--data", "{missing}", "--out", "{out}/study"],
    ["poc", "--data", "{missing}", "--out", "{out}/run"],
    ["export-job", "--out", "{out}/job"],
    ["synth", "--out", "{out}/data"],
    ["tiles", "--out", "{out}/tiles"],
    ["train-tiles", "--data", "{missing}", "--out", "{out}/run"],
    ["bench", "aggregate", "--quick", "--json", "{out}/bench.json"],
    ["stain-normalize", "--input", "{missing}", "--target", "{missing}", "--out", "{out}/norm"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_output_location_checked_before_any_work(tmp_path, capsys, argv):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = [a.format(missing=tmp_path / "missing", out=blocker / "sub") for a in argv]
    try:
        rc = main(args)
    except SystemExit as exc:  # a command whose other required options differ: show them
        pytest.fail(f"{argv[0]}: argparse refused {args}: {exc}")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "cannot be created" in err and "a-file is a file" in err and err.count("\n") == 1, err
    assert blocker.read_text() == "not a folder" and not (tmp_path / "missing").exists()


def test_deface_to_unwritable_place_fails_fast(tmp_path, capsys):
    src = _case(tmp_path / "in", "c0", 0) / "c0_t1.nii.gz"
    before = src.read_bytes()
    target = Path("/proc/fedimg-cannot-write/out/t1_defaced.nii.gz")
    t0 = time.perf_counter()
    rc = main(["deface", str(src), "-o", str(target), "--no-png"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be written" in err and str(target) in err, err
    assert time.perf_counter() - t0 < 5.0 and src.read_bytes() == before


def _site(root: Path, n: int, seed: int) -> Path:
    for i in range(n):
        _case(root, f"c{i}", seed + i)
    return root


def test_simulate_preflight_lists_every_site_problem(tmp_path, capsys, hashed):
    data = tmp_path / "data"
    _site(data / "site-1", 2, 0)
    bad = _site(data / "site-2", 2, 10)
    flair = bad / "c1" / "c1_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 20), np.float32), AFFINE), str(flair))
    (bad / "c2").mkdir()
    check = hashed(data)
    rc = main(["simulate", "--data", str(data), "--out", str(tmp_path / "run"), "--rounds", "1"])
    err = capsys.readouterr().err
    check.assert_unchanged()
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert "pre-flight check found 18 problem(s)" in lines[0] and "nothing was started" in lines[0], err
    ident = [ln for ln in lines if "no defacing record" in ln]
    assert len(ident) == 4 * 4 and all(ln.strip().startswith(("site-1: ", "site-2: ")) for ln in ident), err
    assert any(ln.strip().startswith("site-2: ") and "c2: is an empty case folder" in ln for ln in lines), err
    assert any(ln.strip().startswith("site-2: ") and "c1_flair.nii.gz: image is constant" in ln for ln in lines), err
    assert not (tmp_path / "run" / "nvflare").exists()
    rc = main(["simulate", "--data", str(data), "--out", str(tmp_path / "run"), "--rounds", "1", "--allow-identifiable"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "found 2 problem(s)" in lines[0]
    assert lines[1].strip().startswith("site-2: ") and "c2: is an empty case folder" in lines[1]
    assert lines[2].strip() == f"site-2: {bad / 'c1' / 'c1_flair.nii.gz'}: image is constant (every voxel is 0): " \
                               "an empty or blank scan; replace it or remove the case"


def test_train_skip_bad_cases_reports_them(tmp_path, capsys):
    site = _site(tmp_path / "site", 4, 0)
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 20), np.float32), AFFINE), str(site / "c3" / "c3_t2.nii.gz"))
    (site / "c4").mkdir()
    base = ["train", "--data", str(site), "--allow-identifiable", "--epochs", "1", "--roi", "16", "16", "16",
            "--init-filters", "8", "--threads", "1", "--no-progress", "--val-fraction", "0.34"]
    assert main([*base, "--out", str(tmp_path / "r0")]) == 2  # without the flag the first problem stops it
    assert "c4: is an empty case folder" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "r1"), "--skip-bad-cases"]) == 0
    skipped = json.loads((tmp_path / "r1" / "skipped_cases.json").read_text())["skipped"]
    assert sorted(Path(s["path"]).name for s in skipped) == ["c3_t2.nii.gz", "c4"]
    out = capsys.readouterr().out
    assert "2 bad case(s) skipped" in out and "skipped bad case" in out


def test_predict_msd_4d_image(tmp_path, hashed):
    from fedimg.engine.checkpoint import save_checkpoint
    from fedimg.engine.models import build_model

    rng = np.random.default_rng(0)
    img = tmp_path / "BRATS_485.nii.gz"
    aff = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 1.0, -5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(rng.random((20, 22, 18, 4)).astype(np.float32) + 1.0, aff), str(img))
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, build_model("segresnet", init_filters=8),
                    {"model": "segresnet", "model_kwargs": {"init_filters": 8},
                     "config": {"roi": [16, 16, 16], "init_filters": 8, "device": "cpu"}})
    check = hashed(img)
    out = tmp_path / "pred.nii.gz"
    assert main(["-q", "predict", "--model", str(ckpt), "--case", str(img), "-o", str(out), "--threads", "1"]) == 0
    check.assert_unchanged()
    pred = nib.load(str(out))
    assert pred.shape == (20, 22, 18) and np.array_equal(pred.affine, aff)
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2, 4}
    three_d = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 22, 18), np.float32), aff), str(three_d))
    assert main(["-q", "predict", "--model", str(ckpt), "--case", str(three_d), "-o", str(tmp_path / "p2.nii.gz")]) == 2


def test_evaluate_skip_bad_cases_lists_them_in_results(tmp_path):
    from fedimg.engine.checkpoint import save_checkpoint
    from fedimg.engine.models import build_model

    site = _site(tmp_path / "site", 2, 0)
    (site / "c5").mkdir()
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, build_model("segresnet", init_filters=8),
                    {"model": "segresnet", "model_kwargs": {"init_filters": 8},
                     "config": {"roi": [16, 16, 16], "init_filters": 8, "device": "cpu"}})
    base = ["-q", "evaluate", "--model", str(ckpt), "--data", str(site), "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "e0")]) == 2
    assert main([*base, "--out", str(tmp_path / "e1"), "--skip-bad-cases"]) == 0
    res = json.loads((tmp_path / "e1" / "dice.json").read_text())
    assert res["num_cases"] == 2 and [Path(s["path"]).name for s in res["skipped"]] == ["c5"]
    assert (tmp_path / "e1" / "skipped_cases.json").is_file()


def test_a_named_command_registers_only_its_own_parser():
    """``fedimg deface ...`` parses with the deface parser alone (no federation or training modules imported);
    no command, an option first or an unknown word: the whole parser, as before."""
    from fedimg.cli import COMMAND_MODULES, build_parser, command_module

    assert command_module(["-q", "-v", "deface", "x.nii.gz"]) == "deface"
    assert command_module(["import", "dicom/"]) == "import_dicom" and command_module(["train-tiles"]) == "train_tiles"
    assert command_module([]) is None and command_module(["--version"]) is None and command_module(["nope"]) is None
    sub = build_parser("deface")._subparsers._group_actions[0]
    assert list(sub.choices) == ["deface"]
    assert len(build_parser()._subparsers._group_actions[0].choices) == len(COMMAND_MODULES)
    code = ("import sys; from fedimg.cli import main;\ntry: main(['deface', '--help'])\nexcept SystemExit: pass\n"
            "print('fedimg.cli._federation' in sys.modules, 'fedimg.cli.train' in sys.modules)")
    run = run_python(code)
    assert run.returncode == 0, run.stderr[-800:]
    assert run.stdout.split()[-2:] == ["False", "False"] and "usage: fedimg deface" in run.stdout

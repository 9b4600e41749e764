"""``fedimg deface`` on the CPU: a bad output name is refused before any work, and the CLI's
own steps (thread setting, device choice), and the whole command on an MR and a CT head, leave
torch and pydicom unimported."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from _fresh_python import run_python
from fedimg.cli import main

ROOT = Path(__file__).resolve().parents[2]
HEAD = ROOT / "tests" / "assets" / "mri" / "pycortex_S1_T1w_2mm.nii.gz"


@pytest.mark.parametrize("argv", [["-o", "{d}/bad_name"], ["-o", "{d}/x.nii.gz", "--apply-to", str(HEAD),
                                                          "--apply-to-output", "{d}/y.png"]])
def test_bad_output_name_fails_before_any_work(tmp_path, capsys, argv):
    before = HEAD.read_bytes()
    t0 = time.process_time()
    rc = main(["deface", str(HEAD), *[a.format(d=tmp_path) for a in argv], "--no-png"])
    assert rc == 2
    assert time.process_time() - t0 < 1.0  # no reading, registration or QC first
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output must end in .nii.gz" in err[0] and "nothing was written" in err[0]
    assert list(tmp_path.iterdir()) == [] and HEAD.read_bytes() == before


def test_thread_setting_and_device_choice_do_not_import_torch():
    code = ("import sys; from fedimg.device import configure_threads, configured_threads;"
            "from fedimg.cli.deidentify import deface_device as _device;"
            "n = configure_threads(2, numba=False, torch=False); d = _device('cpu');"
            "assert 'torch' not in sys.modules, 'torch imported';"
            "print(n, configured_threads(), d)")
    out = run_python(code)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.split() == ["2", "2", "cpu"]


CT = ROOT / "tests" / "assets" / "mri" / "vtkjs_headsq_CT.nii.gz"


@pytest.mark.slow  # 3-5 s each on a quiet machine, ~20 s on a loaded one
@pytest.mark.parametrize("head", [HEAD, CT], ids=["mr", "ct"])
def test_fedimg_deface_on_the_cpu_imports_neither_torch_nor_pydicom(tmp_path, head):
    """The whole command (read, registration, QC in its threads, writing), not just its set-up steps."""
    out = tmp_path / "out.nii.gz"
    code = (f"import sys; from fedimg.cli import main; rc = main(['-q', 'deface', {str(head)!r}, '-o', {str(out)!r}, "
            "'--threads', '2', '--no-png']); print(rc, sorted(m for m in ('torch', 'pydicom', 'rich', 'matplotlib') "
            "if m in sys.modules))")
    run = run_python(code, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-800:]
    assert run.stdout.split() == ["0", "[]"] and out.is_file()

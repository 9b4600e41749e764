#!/usr/bin/env python
"""Defacing: seconds per 1 mm head, fedimg vs a SimpleITK MI affine registration.

Both register the same pydeface template to the same real head (ds000031, 1 mm) and warp the
same face mask and brain-protection mask; the removed regions are compared with Dice. The
peer is the pydeface method without FSL: SimpleITK Mattes mutual information, 12-DOF affine,
moments initialisation, 2-level pyramid (4, 2 mm shrink with 2, 1 mm smoothing), random 2 %
sampling, regular-step gradient descent with physical-shift scales (``pip install -e '.[bench]'``).
Times cover registration + mask warping (the file reading is the same for both and excluded);
``end_to_end_s`` also gives fedimg's full ``deface_job`` (read, deface, write NIfTI + JSON).
fedimg's side is :class:`fedimg.bench.deface.DefaceBench` (what ``fedimg bench deface`` times).

    python benchmarks/deface.py --json bench-results/deface.json
    python benchmarks/deface.py --quick
    python benchmarks/deface.py --quick --tilt 40      # robustness: header pitched 40 degrees
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

import _common
from fedimg.bench import deface

__all__ = ["add_arguments", "run"]

log = logging.getLogger("benchmarks.deface")

DESCRIPTION = "defacing: seconds per 1 mm head, fedimg (PyTorch MI multi-start) vs SimpleITK MI affine, Dice of removed regions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    deface.add_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (best is reported)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both methods (default 2)")
    parser.add_argument("--device", default="auto", help="fedimg device: auto, cpu, cuda (SimpleITK is CPU only)")
    parser.add_argument("--tilt", type=float, default=0.0, metavar="DEG",
                        help="rotate the image header by DEG degrees of pitch (voxels unchanged) and also report "
                             "each method's Dice against fedimg's removal on the untilted head")


def _sitk_removal(image: Path, threads: int, seed: int = 0):
    import SimpleITK as sitk

    from fedimg.deface.template import BRAIN_PROTECT_NAME, FACEMASK_NAME, TEMPLATE_NAME, asset_path

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    fixed = sitk.ReadImage(str(image), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(asset_path(TEMPLATE_NAME)), sitk.sitkFloat32)
    face = sitk.ReadImage(str(asset_path(FACEMASK_NAME)), sitk.sitkFloat32)
    brain = sitk.ReadImage(str(asset_path(BRAIN_PROTECT_NAME)), sitk.sitkFloat32)
    t0, c0 = time.perf_counter(), time.process_time()
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.02, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    # Regular-step gradient descent runs to convergence (plain gradient descent with the
    # window convergence check stopped after ~15 iterations at a worse MI, 5-8 mm away).
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200,
                                                 relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    transform = reg.Execute(fixed, moving)
    face_w = sitk.Resample(face, fixed, transform, sitk.sitkLinear, 1.0)  # outside = keep
    brain_w = sitk.Resample(brain, fixed, transform, sitk.sitkLinear, 0.0)
    face_a = sitk.GetArrayViewFromImage(face_w).transpose(2, 1, 0)
    brain_a = sitk.GetArrayViewFromImage(brain_w).transpose(2, 1, 0)
    remove = (face_a < 0.5) & ~(brain_a > 0.01)
    return remove, time.perf_counter() - t0, time.process_time() - c0, float(reg.GetMetricValue())


def run(args: argparse.Namespace) -> int:
    from fedimg.io import write_json

    with deface.DefaceBench(args) as bench:
        removal, result = bench.measure()
        voxel_ml = float(abs(np.linalg.det(bench.vol.affine[:3, :3]))) / 1000.0
        try:
            import SimpleITK  # noqa: F401
        except ImportError:
            log.warning("SimpleITK is not installed (pip install 'fedimg[bench]'): peer skipped")
            result.update(sitk_s=None, speedup=None, dice=None)
        else:
            remove_sitk, t_sitk, cpu_sitk, metric = deface.best(lambda: _sitk_removal(bench.image, bench.threads),
                                                                bench.repeats)
            result.update(sitk_s=t_sitk, sitk_cpu_s=cpu_sitk, cpu_speedup=cpu_sitk / result["fedimg_cpu_s"],
                          sitk_metric=metric, sitk_removed_ml=float(remove_sitk.sum()) * voxel_ml,
                          speedup=t_sitk / result["fedimg_s"], dice=deface.dice(remove_sitk, removal.remove))
        if bench.untilted is not None:
            result["tilt_deg"] = args.tilt
            result["fedimg_dice_vs_untilted"] = deface.dice(removal.remove, bench.untilted)
            if result.get("sitk_s") is not None:
                result["sitk_dice_vs_untilted"] = deface.dice(remove_sitk, bench.untilted)
        if not args.quick:
            result["end_to_end_s"] = bench.end_to_end()
    _print_table(result)
    if args.json:
        write_json(args.json, result)
    return 0


def _print_table(r: dict) -> None:
    rows = [("fedimg (PyTorch MI, batched multi-start)", r["fedimg_s"], r["fedimg_cpu_s"], r["fedimg_removed_ml"])]
    if r.get("sitk_s") is not None:
        rows.append(("SimpleITK (Mattes MI affine)", r["sitk_s"], r["sitk_cpu_s"], r["sitk_removed_ml"]))
    lines = [f"deface benchmark: {Path(r['image']).name} {r['shape']} on {r['device']}, {r['threads']} thread(s)",
             f"{'method':44s} {'wall s':>8s} {'CPU s':>8s} {'removed mL':>11s}"]
    lines += [f"{name:44s} {sec:8.2f} {cpu:8.2f} {ml:11.0f}" for name, sec, cpu, ml in rows]
    if r.get("speedup") is not None:
        lines.append(f"speed-up fedimg vs SimpleITK: {r['speedup']:.2f}x wall, {r['cpu_speedup']:.2f}x CPU time   "
                     f"Dice(removed regions): {r['dice']:.3f}")
    if "tilt_deg" in r:
        lines.append(f"header tilted {r['tilt_deg']:g} deg: Dice vs untilted removal  fedimg "
                     f"{r['fedimg_dice_vs_untilted']:.3f}" + (f"  SimpleITK {r['sitk_dice_vs_untilted']:.3f}"
                                                            if "sitk_dice_vs_untilted" in r else ""))
    if "end_to_end_s" in r:
        lines.append(f"fedimg end to end (read, deface, write NIfTI + sidecars): {r['end_to_end_s']:.2f} s")
    print("\n".join(lines))


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python
"""Defacing: seconds per 1 mm head, fedimg vs a SimpleITK MI affine registration.

Both register the same pydeface template to the same real head (ds000031, 1 mm) and warp the
same face mask and brain-protection mask; the removed regions are compared with Dice. The
peer is the pydeface method without FSL: SimpleITK Mattes mutual information, 12-DOF affine,
moments initialisation, 2-level pyramid (4, 2 mm shrink with 2, 1 mm smoothing), random 2 %
sampling, regular-step gradient descent with physical-shift scales (``pip install -e '.[bench]'``),
after a rotation search like FSL FLIRT's (pydeface's engine): MI at every pitch/roll/yaw of a
±90° grid, the best four optimised coarsely (``--no-peer-search`` turns it off). The two
methods run interleaved, ``--repeats`` times each, for each ``--tilts`` case (header pitch
angles that are no start rotation of either method); medians, min and max go to the JSON
with the peer's settings.
Times cover registration + mask warping (the file reading is the same for both and excluded);
``end_to_end_s`` also gives fedimg's full ``deface_job`` (read, deface, write NIfTI + JSON).
fedimg's side is :class:`fedimg.bench.deface.DefaceBench` (what ``fedimg bench deface`` times).

    python benchmarks/deface.py --json benchmarks/cpu-results/deface.json  # tilt 33, 5 repeats: < 4 min
    python benchmarks/deface.py --quick
    python benchmarks/deface.py --tilts 0 33 -27 --repeats 5  # three poses (about 3x longer)
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
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both methods (default 2)")
    parser.add_argument("--device", default="auto", help="fedimg device: auto, cpu, cuda (SimpleITK is CPU only)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per method (median, min, max)")
    parser.add_argument("--tilts", type=float, nargs="+", default=[33.0], metavar="DEG",
                        help="header pitch angles to run (default 33, which keeps the default run under 4 minutes; "
                             "none equals a start rotation of either method; also try 0 -27); each "
                             "tilted case also reports both methods' Dice against fedimg's untilted removal")
    parser.add_argument("--no-peer-search", action="store_true",
                        help="peer without the FLIRT-like rotation search (moments start only)")


SITK_SETTINGS = {
    "metric": "Mattes MI, 32 bins, random 2 % sampling", "optimizer": "regular-step gradient descent, "
    "lr 2.0, min step 1e-3, 200 iterations, relaxation 0.5, physical-shift scales",
    "pyramid": "shrink 4, 2; smoothing 2, 1 mm", "init": "moments (centre of mass + principal axes off)",
    "search": "FLIRT-like: MI evaluated at every pitch/roll/yaw of a -90..90 deg grid in 30 deg steps "
              "(343 rotations) at shrink 8, the best 4 optimised at shrink 8, the best of those refined",
}


def _sitk_images(image: Path, threads: int):
    import SimpleITK as sitk

    from fedimg.deface.template import BRAIN_PROTECT_NAME, FACEMASK_NAME, TEMPLATE_NAME, asset_path

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    fixed = sitk.ReadImage(str(image), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(asset_path(TEMPLATE_NAME)), sitk.sitkFloat32)
    face = sitk.ReadImage(str(asset_path(FACEMASK_NAME)), sitk.sitkFloat32)
    brain = sitk.ReadImage(str(asset_path(BRAIN_PROTECT_NAME)), sitk.sitkFloat32)
    return fixed, moving, face, brain


def _sitk_method(seed: int, shrink, smooth, iterations: int = 200):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.02, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    # Regular-step gradient descent runs to convergence (plain gradient descent with the
    # window convergence check stopped after ~15 iterations at a worse MI, 5-8 mm away).
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                                                 relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(smooth))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def sitk_register(fixed, moving, *, multistart: bool = True, seed: int = 0):
    """SimpleITK MI affine (template → subject), with the FLIRT-like rotation search when ``multistart``."""
    import itertools

    import SimpleITK as sitk

    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    if multistart:
        centre = init.GetCenter()
        # the search runs on 8x-shrunk copies made once (a pyramid per evaluation would smooth
        # the full volumes 343 times)
        small_f = sitk.Shrink(sitk.SmoothingRecursiveGaussian(fixed, 4.0), [8, 8, 8])
        small_m = sitk.Shrink(sitk.SmoothingRecursiveGaussian(moving, 4.0), [8, 8, 8])
        coarse = _sitk_method(seed, [1], [0.0], iterations=40)
        coarse.SetMetricSamplingPercentage(0.25, seed)
        scored = []
        angles = np.radians(np.arange(-90, 91, 30))
        for ax, ay, az in itertools.product(angles, angles, angles):
            t = sitk.Euler3DTransform(centre, float(ax), float(ay), float(az), init.GetTranslation())
            coarse.SetInitialTransform(t, inPlace=False)
            scored.append((coarse.MetricEvaluate(small_f, small_m), (ax, ay, az)))
        scored.sort(key=lambda x: x[0])
        results = []
        for _, (ax, ay, az) in scored[:4]:
            e = sitk.Euler3DTransform(centre, float(ax), float(ay), float(az), init.GetTranslation())
            t = sitk.AffineTransform(3)
            t.SetCenter(centre)
            t.SetMatrix(e.GetMatrix())
            t.SetTranslation(e.GetTranslation())
            coarse.SetInitialTransform(t, inPlace=False)
            out = coarse.Execute(small_f, small_m)
            results.append((coarse.GetMetricValue(), out))
        init = min(results, key=lambda x: x[0])[1]
    reg = _sitk_method(seed, [4, 2], [2.0, 1.0])
    reg.SetInitialTransform(init, inPlace=False)
    transform = reg.Execute(fixed, moving)
    return transform, float(reg.GetMetricValue())


def _sitk_removal(image: Path, threads: int, seed: int = 0, multistart: bool = True):
    import SimpleITK as sitk

    fixed, moving, face, brain = _sitk_images(image, threads)
    t0, c0 = time.perf_counter(), time.process_time()
    transform, metric = sitk_register(fixed, moving, multistart=multistart, seed=seed)
    face_w = sitk.Resample(face, fixed, transform, sitk.sitkLinear, 1.0)  # outside = keep
    brain_w = sitk.Resample(brain, fixed, transform, sitk.sitkLinear, 0.0)
    face_a = sitk.GetArrayViewFromImage(face_w).transpose(2, 1, 0)
    brain_a = sitk.GetArrayViewFromImage(brain_w).transpose(2, 1, 0)
    remove = (face_a < 0.5) & ~(brain_a > 0.01)
    return remove, time.perf_counter() - t0, time.process_time() - c0, metric


def sitk_matrix_ras(transform) -> np.ndarray:
    """A SimpleITK affine-like transform (LPS, subject → template) as a RAS 4x4 matrix."""
    import SimpleITK as sitk

    t = transform
    while t.GetName() == "CompositeTransform":
        t = sitk.CompositeTransform(t).GetNthTransform(0)
    t = t.Downcast() if hasattr(t, "Downcast") else t
    a = np.array(t.GetMatrix()).reshape(3, 3)
    c = np.array(t.GetCenter())
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = np.array(t.GetTranslation()) + c - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ m @ flip


def _interleaved(bench, repeats: int, multistart: bool) -> tuple[dict, object, object]:
    """fedimg and the peer alternately, ``repeats`` times each: wall/CPU lists and the last removals."""
    times: dict[str, list[float]] = {"fedimg_s": [], "fedimg_cpu_s": [], "sitk_s": [], "sitk_cpu_s": []}
    removal = remove_sitk = metric = None
    for _ in range(max(1, repeats)):
        removal, wall, cpu = bench.once()
        times["fedimg_s"].append(wall)
        times["fedimg_cpu_s"].append(cpu)
        remove_sitk, wall, cpu, metric = _sitk_removal(bench.image, bench.threads, multistart=multistart)
        times["sitk_s"].append(wall)
        times["sitk_cpu_s"].append(cpu)
    stats = {}
    for k, v in times.items():
        stats[k] = float(np.median(v))
        stats[k.replace("_s", "_min_s")], stats[k.replace("_s", "_max_s")] = float(min(v)), float(max(v))
        stats[k.replace("_s", "_all_s")] = v
    stats["sitk_metric"] = metric
    return stats, removal, remove_sitk


def run(args: argparse.Namespace) -> int:
    import copy

    from fedimg.io import write_json

    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        log.error("SimpleITK is not installed (pip install 'fedimg[bench]'): no peer to compare with")
        return 2
    results = []
    for tilt in args.tilts:
        case = copy.copy(args)
        case.tilt = tilt
        with deface.DefaceBench(case) as bench:
            repeats = 1 if args.quick else args.repeats
            stats, removal, remove_sitk = _interleaved(bench, repeats, not args.no_peer_search)
            voxel_ml = float(abs(np.linalg.det(bench.vol.affine[:3, :3]))) / 1000.0
            r = {"benchmark": "deface", "image": str(args.image), "shape": list(bench.vol.shape), "tilt_deg": tilt,
                 "threads": bench.threads, "device": str(bench.device), "repeats": repeats, "preset": args.preset,
                 "peer": "SimpleITK", "peer_settings": dict(SITK_SETTINGS, search=SITK_SETTINGS["search"]
                                                             if not args.no_peer_search else "none (moments only)"),
                 **stats, "fedimg_removed_ml": removal.metrics["removed_ml"],
                 "sitk_removed_ml": float(remove_sitk.sum()) * voxel_ml, "dice": deface.dice(remove_sitk, removal.remove),
                 "speedup": stats["sitk_s"] / stats["fedimg_s"], "cpu_speedup": stats["sitk_cpu_s"] / stats["fedimg_cpu_s"]}
            if bench.untilted is not None:
                r["fedimg_dice_vs_untilted"] = deface.dice(removal.remove, bench.untilted)
                r["sitk_dice_vs_untilted"] = deface.dice(remove_sitk, bench.untilted)
        _print_table(r)
        results.append(r)
    if args.json:
        write_json(args.json, {"cases": results})
    return 0


def _print_table(r: dict) -> None:
    rows = [("fedimg (PyTorch MI, batched multi-start)", r["fedimg_s"], r["fedimg_cpu_s"], r["fedimg_removed_ml"])]
    if r.get("sitk_s") is not None:
        rows.append(("SimpleITK (Mattes MI affine, rotation search)", r["sitk_s"], r["sitk_cpu_s"], r["sitk_removed_ml"]))
    lines = [f"deface benchmark: {Path(r['image']).name} {r['shape']} on {r['device']}, {r['threads']} thread(s)",
             f"medians of {r['repeats']} interleaved runs (min-max in the JSON)",
             f"{'method':44s} {'wall s':>8s} {'CPU s':>8s} {'removed mL':>11s}"]
    lines += [f"{name:44s} {sec:8.2f} {cpu:8.2f} {ml:11.0f}" for name, sec, cpu, ml in rows]
    if r.get("speedup") is not None:
        lines.append(f"speed-up fedimg vs SimpleITK: {r['speedup']:.2f}x wall, {r['cpu_speedup']:.2f}x CPU time   "
                     f"Dice(removed regions): {r['dice']:.3f}")
    if "fedimg_dice_vs_untilted" in r:
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

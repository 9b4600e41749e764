"""``fedimg predict``: segment one case and write a BraTS label NIfTI on the input's exact grid.

    fedimg predict --model runs/site-1 --case data/site-2/BraTS2021_00012 -o pred.nii.gz
    fedimg predict --model runs/site-1 --case Task01_BrainTumour/imagesTs/BRATS_485.nii.gz -o pred.nii.gz

Full-resolution cases (1 mm, 240×240×155) run in bounded memory: sliding windows of ``--roi``
(``--sw-batch-size`` at a time, ``--overlap``) under ``torch.inference_mode``, the output
stitched on the CPU (see the full-resolution section of the README for the measured bound).

Labels are BraTS values (2021: 1 necrotic, 2 oedema, 4 enhancing; a BraTS 2023 case gets
3 for enhancing; an MSD 4-D image gets the BraTS 2021 codes); shape, affine, qform and sform
are copied from the case's first image.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run", "write_label"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment one case into a BraTS label NIfTI",
                       description="Sliding-window inference on one case folder; the output has the input's affine and shape.")
    p.add_argument("--model", required=True, help="run folder from fedimg train (uses its best model) or a .safetensors")
    p.add_argument("--case", required=True,
                   help="one case folder (BraTS 2021/2023 naming) or one MSD Task01 4-D image (FLAIR, T1w, t1gd, T2w)")
    p.add_argument("-o", "--out", required=True, help="output label file (.nii.gz)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--roi", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="sliding-window size (default: the model's training crop; 128 128 128 for 1 mm BraTS)")
    p.add_argument("--sw-batch-size", type=int, default=None,
                   help="windows per forward pass (default: the model's; 1 for the smallest memory)")
    p.add_argument("--overlap", type=float, default=None, help="window overlap in [0, 1) (default: the model's, 0.25)")
    p.set_defaults(func=run)


def write_label(path, labels, reference) -> None:
    """Write ``labels`` (uint8) with the reference image's affine, qform and sform, atomically."""
    from fedimg.imageio.write import save_labels_like

    save_labels_like(path, labels, reference, descrip=b"fedimg predict: BraTS labels")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedimg.cli import env_threads
    from fedimg.data import discover
    from fedimg.data.discover import msd_image_case
    from fedimg.device import configure_threads, resolve_device
    from fedimg.engine.checkpoint import load_checkpoint, resolve_checkpoint
    from fedimg.engine.config import TrainConfig
    from fedimg.engine.evaluate import predict_case
    from fedimg.errors import InputError
    from fedimg.imageio.suffixes import NIFTI_SUFFIXES, has_suffix
    from fedimg.io import ensure_not_input

    configure_threads(args.threads or env_threads())
    device = resolve_device(args.device)
    out = Path(args.out)
    if not has_suffix(out, NIFTI_SUFFIXES, ignore_case=False):
        raise InputError(out, "must end in .nii.gz or .nii")
    ckpt = resolve_checkpoint(args.model)
    if Path(args.case).is_file():
        cases = [msd_image_case(args.case)]
    else:
        cases = discover(Path(args.case), require_labels=False)
    if len(cases) != 1:
        raise InputError(args.case, f"holds {len(cases)} cases; pass one case folder or one MSD 4-D image")
    case = cases[0]
    ensure_not_input(out, *case.images, *([case.label] if case.label else []))
    model, meta = load_checkpoint(ckpt, device=device)
    override = {k: v for k, v in (("roi", args.roi), ("sw_batch_size", args.sw_batch_size),
                                  ("sw_overlap", args.overlap)) if v is not None}
    cfg = TrainConfig.from_dict({**meta.get("config", {}), **override, "device": str(device)})
    labels, reference = predict_case(model, case, cfg, device=device)
    write_label(out, labels, reference)
    counts = {int(v): int((labels == v).sum()) for v in sorted(set(labels.ravel().tolist())) if v}
    log.info("%s: wrote %s (voxels per label %s)", case.case_id, out, counts or "none")
    return 0

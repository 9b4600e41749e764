"""``fedimg deidentify``: DICOM in, DICOM out; headers de-identified (PS3.15 Annex E), pixels defaced.

    fedimg deidentify dicom_root/ -o dicom_deid/
    fedimg deidentify dicom_root/ -o dicom_deid/ --key site.key --date-shift   # dates moved per patient
    fedimg deidentify dicom_root/ -o dicom_deid/ --no-deface                   # headers only
    fedimg deidentify dicom_root/ -o dicom_deid/ --series-map series.yml      # only the series it names

Writes ``OUT/<patient pseudonym>/series-<NNN>/IM00001.dcm ...`` and ``OUT/deid_report.json``
(which tags were removed, emptied or replaced, by name; never a value). Exit codes: 0 done;
2 bad input or option (nothing written); 3 a series failed defacing QC (it is not written).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["register", "run", "add_deid_options", "deid_config", "add_deface_options", "deface_config", "deface_device"]

log = logging.getLogger(__name__)


def add_deid_options(p: argparse.ArgumentParser, *, dates: bool = True) -> None:
    """The de-identification options ``deidentify`` and ``import`` share (``import`` writes no dates)."""
    p.add_argument("--key", type=Path, default=None, metavar="FILE",
                   help="site secret (>= 16 bytes, keep it at the site): the same pseudonyms on every run"
                        + (" and the date-shift key" if dates else "") + "; without it pseudonyms are random per run")
    if not dates:
        p.set_defaults(date_shift=False, max_shift_days=3650)
        return
    p.add_argument("--date-shift", action="store_true",
                   help="move every date back by a keyed per-patient number of days (needs --key) instead of "
                        "removing dates")
    p.add_argument("--max-shift-days", type=int, default=3650, help="largest date shift in days (default 3650)")


def deid_config(args: argparse.Namespace, **kw):
    from fedimg.errors import ConfigError, InputError
    from fedimg.imageio.deid import DeidConfig

    key = None
    if args.key is not None:
        try:
            key = args.key.read_bytes().strip()
        except OSError:
            raise InputError(args.key, "cannot be read; create a site key with "
                                       "`python -c \"import secrets; print(secrets.token_hex(32))\" > site.key`") from None
    if args.date_shift and key is None:
        raise ConfigError("--date-shift needs --key FILE (the secret that makes the per-patient shift)")
    extra = {"pseudonym_key": key} if key is not None else {}
    return DeidConfig(date_shift_key=key if args.date_shift else None, max_shift_days=args.max_shift_days, **extra, **kw)


def add_deface_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["zero", "blur"], default="zero", help="zero the face (default) or blur it")
    p.add_argument("--preset", choices=["auto", "fast", "coarse", "default", "accurate"], default="auto",
                   help="registration effort (auto: coarse for inputs of 1.8 mm or coarser)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the defacer's voxel sampling")


def deface_config(args: argparse.Namespace):
    """(DefaceConfig, device) from the shared defacing options; sets the thread count."""
    from fedimg.cli import env_threads
    from fedimg.deface.core import DefaceConfig
    from fedimg.device import configure_threads

    configure_threads(args.threads or env_threads(), numba=False, torch=False)  # torch only where imported
    return DefaceConfig(preset=args.preset, mode=args.mode, seed=args.seed), deface_device(args.device)


def deface_device(spec: str):
    """``"cpu"`` (a string: defacing on the CPU never imports torch) for ``cpu``, or ``auto`` without an
    NVIDIA driver; else the ``torch.device`` of :func:`fedimg.device.resolve_device` (as ``fedimg deface``)."""
    from fedimg.device import nvidia_driver_present, resolve_device

    spec = (spec or "auto").strip().lower()
    if spec == "cpu" or (spec == "auto" and not nvidia_driver_present()):
        return "cpu"
    return resolve_device(spec)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deidentify",
        help="DICOM in, DICOM out: de-identify headers (PS3.15 Annex E basic profile) and deface the pixels",
        description="De-identify every DICOM image series under a folder: the Annex E basic profile "
        "(dicom-anonymizer tables), private tags removed, PatientIdentityRemoved=YES and the CID 7050 method "
        "codes set, keyed patient pseudonyms, optional keyed date shift; the face removed from the pixels with "
        "the same geometry. A JSON report lists the tags removed (names only).",
    )
    p.add_argument("input", type=Path, help="folder of DICOM files (any nesting; non-DICOM files are skipped)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (outside the input)")
    add_deid_options(p)
    p.add_argument("--series-map", type=Path, default=None, metavar="YAML",
                   help="only the series this map names (name -> SeriesDescription globs, as for `fedimg import`); "
                        "the others are listed in the report and not written")
    p.add_argument("--keep-private", action="store_true", help="keep private tags (removed by default)")
    p.add_argument("--no-deface", action="store_true", help="de-identify headers only; keep the pixels")
    add_deface_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.deface.dicom_deid import deidentify_tree
    from fedimg.deface.dicom_import import load_series_map

    series_map = load_series_map(args.series_map) if args.series_map is not None else None
    deid = deid_config(args, remove_private=not args.keep_private)
    deface, device = deface_config(args)
    report = deidentify_tree(args.input, args.output, deid=deid, deface=None if args.no_deface else deface,
                             device=device, series_map=series_map)
    burned = sum(e["burned_in_annotation"] for e in report["series"])
    if burned:
        log.warning("%d series say BurnedInAnnotation=YES: review their pixels for text", burned)
    log.info("%d series (%d files) de-identified into %s (%d skipped); report %s", len(report["series"]),
             report["files"], args.output, len(report["skipped"]), args.output / "deid_report.json")
    for f in report["failed"]:
        log.error("FAILED %s/%s: %s", f["patient"], f["series"], f["error"])
    return 3 if report["failed"] else 0

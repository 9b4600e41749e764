"""``fedimg import``: a DICOM folder → a training-ready, defaced site folder with provenance.

    fedimg import dicom_root/ -o site-1/ --layout brats --series-map series.yml
    fedimg import dicom_root/ -o site-1/ --layout series --series-map series.yml --key site.key

``series.yml`` maps names to globs on SeriesDescription (case-insensitive), e.g.::

    t1: "*MPRAGE*"
    t1ce: ["*T1*GD*", "*T1*POST*"]
    t2: "T2*"
    flair: "*FLAIR*"
    seg: "*SEG*"                 # optional tumour label: a DICOM SEG series per case, or
    # seg: {files: {PAT-0001: labels/pat1.nii.gz}, codes: {3: 4}}   NIfTI labels keyed by PatientID

Each (patient, study) becomes a case named by a pseudonym; every file is defaced and gets a
``.deface.json`` record; each case has ``<case>.dicom.json`` (what came from which series,
which identifying tags were left behind, by name); a case with a label gets ``<case>_seg.nii.gz``
(resampled nearest-neighbour onto its t1 grid, BraTS 2021 codes). A gantry-tilted series is resampled onto
an orthogonal grid with a warning (``--refuse-tilt`` refuses it instead). Exit codes: 0 done; 2 bad input or option
(nothing written); 3 a case failed defacing QC (see ``import_summary.json``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from fedimg.cli.deidentify import add_deface_options, add_deid_options

    p = sub.add_parser(
        "import",
        help="DICOM folder -> de-identified, defaced NIfTI site folder (BraTS layout) with a provenance record",
        description="Find the DICOM series under a folder, name them with a series map, convert each to NIfTI "
        "(orientation and spacing from the headers), deface them and write provenance records. Header values "
        "never reach the output: cases are named by keyed pseudonyms.",
    )
    p.add_argument("input", type=Path, help="folder of DICOM files (any nesting; non-DICOM files are skipped)")
    p.add_argument("-o", "--output", type=Path, required=True, help="site folder to write (outside the input)")
    p.add_argument("--layout", choices=["brats", "series"], default="brats",
                   help="brats: <case>/<case>_t1.nii.gz ... (the map names t1, t1ce, t2, flair); "
                        "series: <case>/<case>_<name>.nii.gz per mapped series")
    p.add_argument("--series-map", type=Path, default=None, metavar="YAML",
                   help="name -> SeriesDescription glob(s); required for --layout brats; without it (series "
                        "layout) every series is imported as series<N>; its optional `seg` entry names each case's "
                        "label (DICOM SEG series or NIfTI files), written as <case>_seg.nii.gz")
    add_deid_options(p, dates=False)
    p.add_argument("--no-png", action="store_true", help="skip the defacing QC pictures")
    p.add_argument("--refuse-tilt", action="store_true",
                   help="refuse gantry-tilted series (slices off the slice normal) instead of resampling them onto "
                        "an orthogonal grid (linear; recorded as tilt_corrected_deg)")
    add_deface_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.cli.deidentify import deface_config, deid_config
    from fedimg.deface.dicom_import import import_dicom, load_series_map
    from fedimg.deface.dicom_labels import load_label_map

    series_map = load_series_map(args.series_map) if args.series_map is not None else None
    labels = load_label_map(args.series_map) if args.series_map is not None else None
    deid = deid_config(args)
    deface, device = deface_config(args)
    summary = import_dicom(args.input, args.output, layout=args.layout, series_map=series_map, deid=deid,
                           deface=deface, device=device, png=not args.no_png, refuse_tilt=args.refuse_tilt, labels=labels)
    log.info("imported %d of %d case(s) into %s (%d series skipped: not in the series map)", len(summary["cases"]),
             summary["total"], args.output, len(summary["skipped_series"]))
    for f in summary["failed"]:
        log.error("FAILED %s: %s", f["case"], f["error"])
    return 3 if summary["failed"] else 0

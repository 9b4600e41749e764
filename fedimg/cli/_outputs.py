"""Every command's output location is checked before the command does any work.

``fedimg.cli.main`` calls :func:`check_outputs` on the parsed arguments: each output option
(``--out``, ``-o/--output``, ``--json-dir``, ``fedimg bench``'s ``--json``) must name a location that can be created and
written (:func:`fedimg.io.check_writable`); an option whose value ends in a file suffix is a
file, any other a folder. A bad location is one line naming it, before any input is read.

>>> import argparse, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> [p.name for p in check_outputs(argparse.Namespace(out=str(d / "run"), output=d / "x.nii.gz"))]
['run', 'x.nii.gz']
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimg.io import check_writable

__all__ = ["OUTPUT_OPTIONS", "FILE_SUFFIXES", "check_outputs"]

#: Argument names (``args.<name>``) that hold an output location.
OUTPUT_OPTIONS = ("out", "output", "json_dir", "json")
#: Values ending in one of these are output files; any other value is an output folder.
FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".json", ".csv", ".png", ".safetensors", ".pt", ".npz", ".txt")


def check_outputs(args: argparse.Namespace) -> list[Path]:
    """Check every output location of ``args``; returns the checked paths."""
    checked = []
    for name in OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if value is None or value == "":
            continue
        path = Path(value)
        folder = name != "json" and not path.name.lower().endswith(FILE_SUFFIXES)
        if getattr(args, "input", None) is not None and name == "output" and Path(args.input).is_dir():
            folder = True  # batch deface: the output is a folder
        checked.append(check_writable(path, folder=folder))
    return checked

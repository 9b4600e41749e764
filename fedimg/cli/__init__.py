"""The ``fedimg`` command line.

Each sub-command lives in its own module ``fedimg.cli.<name>`` exposing
``register(subparsers)``; the parser it adds sets ``func`` to a ``run(args) -> int``.
Command modules import heavy packages (torch, MONAI, NVFlare) inside ``run`` so that
``fedimg --help`` stays fast. A command line that names its command registers only that
command's parser (:func:`build_parser` with ``only``): ``fedimg deface ...`` does not import
the federation and training options' modules.

Errors a user causes (:class:`fedimg.errors.FedimgError`) are printed as one line
``fedimg: error: <file>: <problem and fix>`` with a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from fedimg import __version__

__all__ = ["main", "build_parser", "command_module", "COMMAND_MODULES"]

log = logging.getLogger("fedimg")

# Order is the order shown by ``fedimg --help``.
COMMAND_MODULES = [
    "synth",
    "import_dicom",
    "deidentify",
    "deface",
    "train",
    "evaluate",
    "predict",
    "simulate",
    "study",
    "poc",
    "provision",
    "export_job",
    "submit",
    "tiles",
    "stain_normalize",
    "train_tiles",
    "bench",
]


# Command names that are not their module's name with "_" -> "-".
_COMMAND_NAMES = {"import_dicom": "import"}


def command_module(argv: list[str]) -> str | None:
    """The module of the command ``argv`` names (its first word after the global flags), or None.

    >>> command_module(["-q", "deface", "t1.nii.gz"]), command_module(["--help"]), command_module(["nope"])
    ('deface', None, None)
    """
    word = next((a for a in argv if not a.startswith("-")), None)  # every global option is a flag
    by_name = {_COMMAND_NAMES.get(m, m.replace("_", "-")): m for m in COMMAND_MODULES}
    return by_name.get(word) if word is not None else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``fedimg`` parser; ``only``: register just that command module (the others are not imported)."""
    parser = argparse.ArgumentParser(
        prog="fedimg",
        description="Federated learning for medical imaging: deface, train per site, federate on NVFlare, report.",
    )
    parser.add_argument("--version", action="version", version=f"fedimg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES if only is None else [only]:
        importlib.import_module(f"fedimg.cli.{name}").register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    # Progress logs go to stdout (as rich's console does); stderr carries only the one-line
    # error of a failed command.
    handler: logging.Handler
    if sys.stdout.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=verbose > 1, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # logs, CI, pipes: one unwrapped line per record
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("fedimg").setLevel(level)
    # NVFlare/MONAI are chatty at INFO; keep them at WARNING unless -vv.
    for noisy in ("nvflare", "monai", "numba", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from fedimg.errors import FedimgError

    parser = build_parser(command_module(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from fedimg.cli._outputs import check_outputs

        check_outputs(args)  # every output location before any work
        return int(args.func(args) or 0)
    except FedimgError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"fedimg: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("fedimg: interrupted\n")
        return 130


def env_threads() -> int | None:
    """``FEDIMG_THREADS`` from the environment, if set (only the CLI reads the environment)."""
    value = os.environ.get("FEDIMG_THREADS")
    return int(value) if value else None

"""User-facing errors.

Every error a user can cause (bad input file, wrong option) is a :class:`FedimgError`.
The CLI prints its message on one line and exits non-zero without a traceback unless
``--debug`` is given. Messages name the file and say what to do.

>>> e = InputError("scan.nii.gz", "is 2-D; pass a 3-D volume")
>>> str(e)
'scan.nii.gz: is 2-D; pass a 3-D volume'
"""

from __future__ import annotations

from os import PathLike

__all__ = ["FedimgError", "InputError", "ConfigError", "QCError"]


class FedimgError(Exception):
    """Base class of errors caused by the user's input or options (exit code 2)."""

    exit_code = 2


class InputError(FedimgError):
    """A bad input file: the message names the file, what is wrong and the fix."""

    def __init__(self, path: str | PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class ConfigError(FedimgError):
    """An invalid option or configuration value."""


class QCError(FedimgError):
    """A quality check failed (e.g. defacing could not be verified)."""

    exit_code = 3

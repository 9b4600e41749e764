"""MONAI-compatible transforms (installed as ``fedimg.transforms``).

Each family comes in three parts: a pure function doing the maths, an array ``Transform``
declaring its ``backend``, and a dictionary ``MapTransform`` twin with no maths.

- :mod:`fedimg.transforms.deface`: ``deface_volume``, ``Deface``, ``Defaced``.
- :mod:`fedimg.transforms.stain`: Macenko / Reinhard stain normalisation and stain augmentation.
- :mod:`fedimg.transforms.intensity`: per-case landmark intensity standardisation (MRI).

Names are loaded lazily so importing one family does not import the other's dependencies.
"""

from __future__ import annotations

import importlib

_FAMILIES = ("deface", "stain", "intensity")
__all__ = list(_FAMILIES)  # the families; their names load lazily through __getattr__


def __getattr__(name: str):
    if name.startswith("__"):  # introspection (inspect.unwrap's __wrapped__, doctest, pickle) imports nothing
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for fam in _FAMILIES:
        try:
            mod = importlib.import_module(f".{fam}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{fam}":
                raise
            continue
        if name in getattr(mod, "__all__", ()):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

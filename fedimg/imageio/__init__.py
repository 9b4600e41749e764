"""The one place that reads and writes volumes: NIfTI (nibabel) and NRRD, provenance records.

Modules: :mod:`.volume` (read, validate, reorient, write like the input),
:mod:`.nrrd` (a small NRRD reader), :mod:`.provenance` (defacing records).
"""

__all__: list[str] = []

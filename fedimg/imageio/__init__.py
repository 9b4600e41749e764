"""The one place that reads and writes volumes: NIfTI (nibabel) and NRRD, header checks,
suffix lists, provenance records.

Modules: :mod:`.suffixes` (the one suffix list, file stems), :mod:`.nifti` (header-first
NIfTI reading with shape / grid / NaN checks, for multi-file cases; a lean nibabel import
without pydicom for commands that never parse DICOM extensions), :mod:`.volume` (read,
validate, reorient and write a single head volume like its input, NIfTI or NRRD),
:mod:`.nrrd` (a small NRRD reader), :mod:`.write` (label maps on a reference grid,
reproducible ``.nii.gz``), :mod:`.provenance` (defacing records: sidecar JSON and the
NIfTI ``descrip`` tag). Every reading problem is an :class:`fedimg.errors.InputError` that
names the file; every write is atomic.

>>> from fedimg.imageio import is_nifti, stem
>>> is_nifti("t1.nii.gz"), stem("t1.nii.gz")
(True, 't1')
"""

from .nifti import import_nibabel_without_pydicom, open_nifti, read_volume
from .provenance import is_defaced, sidecar_path
from .suffixes import NIFTI_SUFFIXES, NRRD_SUFFIXES, VOLUME_SUFFIXES, is_nifti, is_nrrd, is_volume, stem
from .volume import Volume, load_volume, save_like
from .write import save_labels_like, write_nifti_gz

__all__ = [
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "VOLUME_SUFFIXES",
    "Volume",
    "import_nibabel_without_pydicom",
    "is_defaced",
    "is_nifti",
    "is_nrrd",
    "is_volume",
    "load_volume",
    "open_nifti",
    "read_volume",
    "save_labels_like",
    "save_like",
    "sidecar_path",
    "stem",
    "write_nifti_gz",
]

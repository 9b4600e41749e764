"""Defacing of head MRI: template registration (PyTorch, mutual information), face removal, QC.

Modules: :mod:`.register` (batched multi-start affine MI registration), :mod:`.template`
(package assets), :mod:`.masks` (warping and removal), :mod:`.core` (in-memory defacing),
:mod:`.qc` (checks, picture), :mod:`.pipeline`
(files + provenance; volume I/O is :mod:`fedimg.imageio`), :mod:`.batch` (BIDS / BraTS trees). The CLI is ``fedimg deface``; the
MONAI transforms are :mod:`fedimg.transforms.deface`.

>>> from fedimg.deface import DefaceConfig
>>> DefaceConfig(mode="blur").mode
'blur'
"""

from .core import DefaceConfig, FaceRemoval, face_removal
from .pipeline import DefaceJob, deface_job
from .register import Registration, RegistrationConfig, register

__all__ = ["DefaceConfig", "FaceRemoval", "face_removal", "DefaceJob", "deface_job",
           "Registration", "RegistrationConfig", "register"]

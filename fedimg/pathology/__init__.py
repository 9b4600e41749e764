"""Pathology: whole-slide reading, tissue detection, tiling into HDF5, synthetic multi-site
tile sets, and tile-classifier training (per site and as a federated task).

Modules: :mod:`.slide`, :mod:`.tissue`, :mod:`.tiling`, :mod:`.store`, :mod:`.labels`,
:mod:`.synth`, :mod:`.train`. The federated task is :mod:`fedimg.tasks.tiles`.
Stain normalisation itself lives in :mod:`fedimg.transforms.stain` (numpy reference: :mod:`fedimg.transforms.stain_reference`).
"""

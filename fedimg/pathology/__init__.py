"""Pathology: whole-slide reading, tissue detection, tiling into HDF5, synthetic multi-site
tile sets, and tile-classifier training (per site and as a federated task).

Modules: :mod:`.slide`, :mod:`.tissue`, :mod:`.tiling`, :mod:`.store`, :mod:`.labels`,
:mod:`.synth`, :mod:`.train`, :mod:`.task`, :mod:`.reference` (numpy Macenko peer).
Stain normalisation itself lives in :mod:`fedimg.transforms.stain`.
"""

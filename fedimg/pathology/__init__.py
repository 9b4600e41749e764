"""Pathology: whole-slide reading, tissue detection, tiling into HDF5, synthetic multi-site
tile sets, and what tile-classifier training needs from the tiles side.

Modules: :mod:`.slide`, :mod:`.tissue`, :mod:`.tiling`, :mod:`.store`, :mod:`.labels`,
:mod:`.synth`; for training: :mod:`.config` (``TileTrainConfig``), :mod:`.models`
(``build_tile_model``), :mod:`.tiledata` (``prepare_tile_data``: the tile cache on the
device), :mod:`.augment` (flips, rotations, stain perturbation, network input). The training
itself (the engine's epoch loop with the tile hooks, ``fit_tiles``, evaluation) is the
``"tiles"`` task, :mod:`fedimg.tasks.tiles`. Stain normalisation lives in
:mod:`fedimg.transforms.stain` (numpy reference: :mod:`fedimg.transforms.stain_reference`).
"""

__all__: list[str] = []

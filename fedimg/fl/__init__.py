"""Federation: server arithmetic in :mod:`fedimg.fl.server`, NVIDIA FLARE glue in :mod:`fedimg.fl.nvflare`.

Only :mod:`fedimg.fl.nvflare` imports ``nvflare``; :mod:`fedimg.fl.server` is plain numpy /
kernels code (strategies, update validation, run store) usable and testable on its own.
"""

__all__: list[str] = []

"""The server's arithmetic, without NVFlare: strategies, update validation, run store.

Modules: :mod:`.strategies` (how a round's updates become a server step),
:mod:`.validation` (names/shapes/dtypes/NaN/norm checks on every update),
:mod:`.state` (checkpoints, metrics, resume).
"""

__all__: list[str] = []

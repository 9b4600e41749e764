"""The server's arithmetic, without NVFlare: strategies, update validation, run store.

Modules: :mod:`.strategies` (one :class:`~.strategies.Strategy` class per strategy: how a
round's updates become a server step), :mod:`.strategy_config` (``StrategyConfig``, the
strategy's parameters as one JSON-able value), :mod:`.validation` (names/shapes/dtypes/
NaN/norm checks on every update), :mod:`.state` (checkpoints, metrics, resume),
:mod:`.federation` (``FederationConfig``, site discovery, where a run starts).
"""

__all__: list[str] = []

"""The only package of fedimg that imports NVIDIA FLARE.

Modules: :mod:`.aggregator` (a ``ModelAggregator`` around :mod:`fedimg.fl.server`),
:mod:`.client` (the Client API script each site runs), :mod:`.job` (the recipe),
:mod:`.persistor`, :mod:`.simulate` (SimEnv, started through :mod:`.simrun`), :mod:`.poc` (POC, mutual TLS),
:mod:`.provision` (startup kits).
"""

__all__: list[str] = []

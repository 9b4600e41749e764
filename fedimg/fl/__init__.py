"""Federated training on NVIDIA FLARE: the only part of fedimg that imports ``nvflare``.

Modules without NVFlare imports (usable and testable on their own): ``strategies``
(server arithmetic), ``validation`` (update checks), ``state`` (checkpoints, metrics,
resume), ``tasks`` (task registry), ``toytask``. NVFlare glue: ``aggregator`` (server),
``client`` (Client API script), ``job`` (recipe), ``simulate``, ``crossval``, ``study``,
``poc``, ``provision``.
"""

__all__: list[str] = []

"""The study: federated vs centralised vs each site alone, compared like with like.

Modules: :mod:`.runner` (``fedimg study``: seeds, arms, test evaluation, ``--merge``),
:mod:`.protocol` (train / validation / test splits, early stopping), :mod:`.arms` (each arm
trained until its validation Dice stops improving), :mod:`.intervals` (bootstrap over test
cases and seeds), :mod:`.summary` (the numbers), :mod:`.report` (Markdown report and plots),
:mod:`.crossval` (every model on every site, for ``fedimg simulate``).
"""

__all__: list[str] = []

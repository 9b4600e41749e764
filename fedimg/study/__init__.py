"""The study: centralised vs each site alone vs federated, cross-site validation, reports.

Modules: :mod:`.runner` (``fedimg study``), :mod:`.crossval` (every model on every site),
:mod:`.report` (Markdown report and plots).
"""

__all__: list[str] = []

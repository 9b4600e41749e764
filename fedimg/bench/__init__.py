"""``fedimg bench``: a user measures fedimg's own throughput on their hardware.

One module per benchmark (``train``: voxels/s; ``aggregate``: GB/s and % of the machine's
streaming rate; ``deface``: seconds per head; ``federation``: round split, server
aggregation time and memory; ``tiles``: tiles/s), each with ``DESCRIPTION``,
``add_arguments(parser)`` (``--json PATH``, ``--quick``) and ``run(args) -> int``; they
print a table, GPU utilisation and memory where there is a GPU (:mod:`fedimg.telemetry`).
:mod:`.probes` holds the memory-bandwidth probes. Comparisons with peers (Flower, NVFlare,
SimpleITK, the MONAI tutorial loop, ...) are the scripts in the repository's
``benchmarks/`` folder, which call these modules' measurement functions; nothing here
imports a peer.
"""

__all__: list[str] = []

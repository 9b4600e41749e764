"""Benchmarks behind ``fedimg bench`` and ``benchmarks/*.py``.

Each module compares fedimg with a named peer in the same process and run, prints the
ratio and writes JSON. Peers that are not fedimg dependencies (Flower, SimpleITK) come from
the ``bench`` extra: ``pip install 'fedimg[bench]'``.
"""

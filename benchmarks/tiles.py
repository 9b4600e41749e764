#!/usr/bin/env python
"""Pathology tiles/s: extraction + Macenko + training, fedimg vs a plain fp32 loop (same as `fedimg bench tiles`).

    python benchmarks/tiles.py --json bench-results/tiles.json
    python benchmarks/tiles.py --quick
"""

import argparse
import logging
import sys

from fedimg.bench import tiles


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=tiles.DESCRIPTION)
    tiles.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return tiles.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

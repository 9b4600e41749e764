#!/usr/bin/env python
"""Defacing: seconds per 1 mm head, fedimg vs SimpleITK MI affine (same as `fedimg bench deface`).

    python benchmarks/deface.py --json bench-results/deface.json
    python benchmarks/deface.py --quick
"""

import argparse
import logging
import sys

from fedimg.bench import deface


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=deface.DESCRIPTION)
    deface.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return deface.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

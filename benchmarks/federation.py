#!/usr/bin/env python
"""Federated round split, server aggregation vs NVFlare, server memory (same as `fedimg bench federation`).

    python benchmarks/federation.py --quick --json bench-results/federation.json
"""

import argparse
import logging
import sys

from fedimg.bench import federation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=federation.DESCRIPTION)
    federation.add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return federation.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""FedAvg aggregation: fedimg kernels vs Flower and NVFlare (same as `fedimg bench aggregate`).

    python benchmarks/aggregate.py --quick --json bench-results/aggregate.json
"""

import argparse
import logging
import sys

from fedimg.bench import aggregate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=aggregate.DESCRIPTION)
    aggregate.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return aggregate.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Training throughput: fedimg's engine vs the MONAI BraTS tutorial loop (same as `fedimg bench train`).

    python benchmarks/train_throughput.py --quick --json bench-results/train.json
"""

import argparse
import logging
import sys

from fedimg.bench import train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=train.DESCRIPTION)
    train.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return train.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

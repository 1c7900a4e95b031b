"""`python -m bench`: the same as `companion bench`."""

import sys

from bench.cli import main, parser

sys.exit(main(parser().parse_args()))

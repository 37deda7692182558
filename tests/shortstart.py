"""
lorrygate whose wait for an unfinished start after a signal is ``$LORRYGATE_TEST_START_WAIT`` seconds (60 in
the product): ``python -m tests.shortstart -c gateway.ini``. A test of the give-up path need not wait a minute.
"""

import os
import sys

from lorrygate import cli

cli.START_WAIT = float(os.environ["LORRYGATE_TEST_START_WAIT"])

if __name__ == "__main__":
    sys.exit(cli.main())

"""``python -m cruise``: the same as the ``cruise`` console script."""

import sys

from cruise.cli import main

sys.exit(main())

"""``python -m mqstore``: the `mqstore` command line."""

import sys

from .cli import main

sys.exit(main())

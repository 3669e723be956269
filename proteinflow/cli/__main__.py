"""``python -m proteinflow.cli``: the same as the ``proteinflow`` console script."""

import sys

from proteinflow.cli import main

sys.exit(main())

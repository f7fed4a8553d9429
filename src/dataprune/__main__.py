"""``python -m dataprune`` runs the command line (also under torchrun)."""

import sys

from .harness.cli import main

sys.exit(main())

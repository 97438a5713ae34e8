"""`python -m include.nightshift spec init|check` (see cli.py): run from the repository root."""

import sys

from include.nightshift.cli import main

sys.exit(main())

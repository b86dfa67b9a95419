"""``python -m cgwatchdog`` runs the command line."""

import sys

from cgwatchdog.cli import main

sys.exit(main())

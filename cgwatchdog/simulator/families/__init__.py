"""The firmware families' simulator flavours, one module each (what the family answers
on the API and its control channel); importing this package adds them all.

A family's flavour lives here beside its ``cgwatchdog/firmware/families/`` module.
"""

from cgwatchdog.registry import import_all

import_all(__name__, __path__)

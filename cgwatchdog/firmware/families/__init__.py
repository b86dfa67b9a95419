"""The built-in firmware families, one module each; importing this package registers
them all (see :mod:`cgwatchdog.firmware.base` for what a family owns).

A new family, or a new firmware version's quirk, is a module here (and its tests and
simulator flavour): nothing else to edit.
"""

from cgwatchdog.registry import import_all

import_all(__name__, __path__)

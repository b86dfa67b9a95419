"""The built-in receiver kinds, one module each (config model and integration);
importing this package registers them all (see :mod:`cgwatchdog.notify.base`).

A new receiver kind is a new module here and its tests: nothing else to edit.
"""

from cgwatchdog.registry import import_all

import_all(__name__, __path__)

"""The built-in webhook formats, one module per service; importing this package
registers them all (see :mod:`cgwatchdog.notify.render` for what a format is).

A new chat preset is a new module here and its tests: nothing else to edit.
"""

from cgwatchdog.registry import import_all

import_all(__name__, __path__)

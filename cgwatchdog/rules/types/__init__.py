"""The built-in rule types, one module each; importing this package registers them all.

A new rule type is a new module here (its config model and evaluator, registered with
:func:`cgwatchdog.rules.base.rule_type`) and its tests: nothing else to edit.
"""

from cgwatchdog.registry import import_all

import_all(__name__, __path__)

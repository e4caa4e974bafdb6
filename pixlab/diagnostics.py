"""``pixlab.diagnostics``: the public name of :mod:`pixlab.analysis.diagnostics` (kept for user notebooks)."""

from pixlab.analysis.diagnostics import *  # noqa: F401,F403
from pixlab.analysis.diagnostics import __all__  # noqa: F401

"""Fuel-card network risk and analytics: the pure domain core.

Modules in this package do no I/O except the explicitly named entry points
(:mod:`fuelcard.cli`, :mod:`fuelcard.settings`). Adapters (``streams``,
``warehouse``, ``serving``) import the core, never the reverse.
"""

__version__ = "0.1.0"

"""CLI entry points. Unlike the rest of :mod:`fuelcard`, these modules may do I/O
and import adapters; each sub-command module exposes a Typer ``app``."""

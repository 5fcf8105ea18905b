"""Synthetic fuel-card network with known ground truth (``fuelcard simulate``).

Public API::

    from fuelcard.simulator import SimConfig, simulate, write, read, FILES
    frames = simulate(SimConfig(seed=7, days=30, stations=200, members=20_000))
    write(frames, "data/sim")          # every Parquet file of docs/DATA.md + ground_truth/truth.json

Everything is vectorised numpy/pandas and deterministic by seed.
"""

from fuelcard.simulator.config import DEFAULT_FRAUD_RATES, FILES, SCENARIOS, TRUTH_FILE, SimConfig
from fuelcard.simulator.core import simulate
from fuelcard.simulator.io import OutputError, read, write

__all__ = ["DEFAULT_FRAUD_RATES", "FILES", "SCENARIOS", "TRUTH_FILE", "OutputError", "SimConfig", "read",
           "simulate", "write"]

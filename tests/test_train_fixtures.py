"""Shared, cached fixtures for the training tests: one small simulation and the registries trained on it.

Kept in a module (not conftest.py) so each of the training test modules can import it; ``lru_cache`` makes the
simulation and the training run once per pytest process, whichever module asks first.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from fuelcard.commands import train_jobs as tj
from models.registry import Registry

SIM = {"seed": 11, "days": 200, "stations": 10, "members": 400}
HOLDOUT_DAYS = 28
#: Shrunk workloads so every kind trains in seconds (the contract does not depend on size); the report images
#: are tested in test_pricing/test_sites and the CLI test, not here.
OPTIONS = {"demand_max_series": 4, "fraud_window_days": 60, "fraud_test_days": 14, "plots": False}


def _tmp(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


@lru_cache(maxsize=1)
def sim_dir() -> Path:
    """A small simulated network written with the simulator's Python API (cached per process)."""
    from fuelcard.simulator import SimConfig, simulate, write

    out = _tmp("fuelcard-train-sim-")
    write(simulate(SimConfig(**SIM)), out)
    return out


def context(registry_root: Path, *, seed: int = 0) -> tj.TrainContext:
    """A training context on the small simulation, cut off ``HOLDOUT_DAYS`` before its end."""
    src = tj.ParquetSource(sim_dir())
    as_of = tj.default_as_of(src) - timedelta(days=HOLDOUT_DAYS)
    return tj.TrainContext(source=src, registry=Registry(registry_root), as_of=as_of, seed=seed,
                           truth_path=sim_dir() / "ground_truth" / "truth.json", options=dict(OPTIONS))


def available_kinds() -> list[str]:
    return [k for k in tj.KINDS if tj.SPECS[k].available()]


@lru_cache(maxsize=2)
def trained(tag: str = "a") -> tuple[Registry, dict[str, tj.JobOutcome]]:
    """Every available kind trained once into a fresh registry (``tag`` b = an identical second run)."""
    ctx = context(_tmp(f"fuelcard-registry-{tag}-"))
    outcomes = {kind: tj.run_job(ctx, kind) for kind in available_kinds()}
    return ctx.registry, outcomes

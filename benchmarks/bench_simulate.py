"""Simulator throughput: >= 1,000,000 transactions simulated and written as Parquet, timed end to end.

Target (issue 2): >= 16,700 transactions/s (1M in <= 60 s) with peak RSS <= 4 GB on the 2-core machine.
``seconds`` is accepted for the runner's interface; the workload is fixed (it is already bounded).
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

from fuelcard.simulator import SimConfig, simulate, write

CONFIG = SimConfig(seed=7, days=100, stations=300, members=50_000)


def run(seconds: float | None = None) -> dict:
    """Simulate ~1M transactions into a temporary directory; report count, time, rate and peak RSS."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-simulate-"))
    try:
        started = time.perf_counter()
        frames = simulate(CONFIG)
        write(frames, tmp / "sim")
        elapsed = time.perf_counter() - started
        n = len(frames["transactions.parquet"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"transactions": n, "seconds": round(elapsed, 2), "tx_per_s": round(n / elapsed, 1),
            "peak_rss_mb": round(peak_mb, 1), "days": CONFIG.days, "stations": CONFIG.stations,
            "members": CONFIG.members}

"""Demand forecasting throughput: 1,000 daily series (2 years each), 30-day forecasts with 80% intervals.

Target (issue 6): 1,000 series in ≤ 300 s on the 2-core machine. ``BENCH_SECONDS`` (or ``seconds``) scales the
number of series down proportionally for a quick check (300 s ↔ 1,000 series) and extrapolates.
"""

from __future__ import annotations

import os
import time


def run(seconds: float | None) -> dict:
    from models.demand import backtest_frame, forecast_frame, synthetic_series

    n_series = 1000 if seconds is None else max(20, min(1000, int(1000 * seconds / 300)))
    df = synthetic_series(n_series, days=730, seed=11)
    jobs = max(1, min(2, os.cpu_count() or 1))
    forecast_frame(df[df["item"] == "item000"], date_col="date", value_col="sales", id_col="item",
                   horizon=30)  # warm imports and the holiday table
    t0 = time.perf_counter()
    fc, info = forecast_frame(df, date_col="date", value_col="sales", id_col="item", horizon=30, n_jobs=jobs)
    elapsed = time.perf_counter() - t0
    sample = df[df["item"].isin(sorted(df["item"].unique())[:100])]
    _, acc = backtest_frame(sample, date_col="date", value_col="sales", id_col="item", horizon=30, n_jobs=jobs)
    return {
        "series": n_series,
        "horizon": 30,
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "seconds_per_series": round(elapsed / n_series, 4),
        "projected_seconds_1000": round(elapsed / n_series * 1000, 1),
        "target_seconds_1000": 300,
        "holidays": info["holidays"],
        "backtest_series": acc["series"],
        "wape": round(acc["wape"], 4),
        "wape_snaive": round(acc["wape_snaive"], 4),
        "mase": round(acc["mase"], 4),
        "mase_snaive": round(acc["mase_snaive"], 4),
        "coverage80": round(acc["coverage80"], 4),
    }

"""Training benchmark: every ``fuelcard train`` job from the embedded warehouse on a simulated network.

Simulates ``members × stations × days`` (default 50,000 × 200 × 365), loads it into a fresh embedded (chdb)
warehouse, then times each job (read from the warehouse, point-in-time frames, fit, reports, registry and
``model_versions`` row) with the cut-off at the end of the data. Simulation and loading are reported but not
counted in ``total_seconds``.

Environment: ``BENCH_SECONDS`` set → a quick check on a smaller network (5,000 members × 50 stations × 120
days); ``BENCH_TRAIN_MEMBERS`` / ``BENCH_TRAIN_STATIONS`` / ``BENCH_TRAIN_DAYS`` override the size;
``BENCH_TRAIN_KINDS`` (comma list) limits the kinds; ``BENCH_TRAIN_JOBS`` sets demand's worker processes (2).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


def run(seconds: float | None) -> dict:
    from fuelcard.commands import train_jobs as tj
    from fuelcard.simulator import SimConfig, simulate, write
    from models.registry import Registry
    from warehouse import connect
    from warehouse.loader import load_dir

    quick = seconds is not None
    members = int(os.environ.get("BENCH_TRAIN_MEMBERS", 5_000 if quick else 50_000))
    stations = int(os.environ.get("BENCH_TRAIN_STATIONS", 50 if quick else 200))
    days = int(os.environ.get("BENCH_TRAIN_DAYS", 120 if quick else 365))
    kinds = [k for k in os.environ.get("BENCH_TRAIN_KINDS", ",".join(tj.KINDS)).split(",") if k]
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        t0 = time.perf_counter()
        write(simulate(SimConfig(seed=7, days=days, stations=stations, members=members)), root / "sim")
        sim_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        wh = connect(f"chdb://{root / 'wh'}")
        load_dir(wh, root / "sim", progress=False)
        load_s = time.perf_counter() - t0
        src = tj.WarehouseSource(wh)
        as_of = tj.default_as_of(src)
        ctx = tj.TrainContext(source=src, registry=Registry(root / "registry"), as_of=as_of, warehouse=wh,
                              options={"n_jobs": int(os.environ.get("BENCH_TRAIN_JOBS", 2))},
                              progress=lambda msg: print(f"  {msg}", flush=True))
        secs: dict[str, float] = {}
        headline: dict[str, dict] = {}
        for kind in kinds:
            t0 = time.perf_counter()
            try:
                out = tj.run_job(ctx, kind)
                headline[kind] = {k: v for k, v in out.metrics.items() if isinstance(v, int | float)}
            except Exception as exc:  # noqa: BLE001 - report the failure, keep timing the others
                headline[kind] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            secs[kind] = round(time.perf_counter() - t0, 2)
            print(f"  {kind}: {secs[kind]} s", flush=True)
        wh.close()
        pick = {"churn": ("concordance", "auc_90d"), "pricing": ("r2", "true_profit_uplift"),
                "demand": ("accuracy", "wape", "mase", "series"),
                "sites": ("topk_captured_unserved", "baseline_captured_unserved"),
                "fraud": ("auc_roc", "average_precision", "review_fpr", "review_recall")}
        return {
            "members": members, "stations": stations, "days": days,
            "seconds": secs, "total_seconds": round(sum(secs.values()), 2),
            "simulate_seconds": round(sim_s, 2), "load_seconds": round(load_s, 2),
            "metrics": {k: {m: headline[k].get(m) for m in pick.get(k, ()) if m in headline[k]}
                        | ({"error": headline[k]["error"]} if "error" in headline[k] else {}) for k in headline},
            "quick": quick,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

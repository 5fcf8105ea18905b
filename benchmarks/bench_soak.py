"""Soak benchmark: ``make soak`` (30 minutes) / ``BENCH_SECONDS=N make soak`` (a short run).

Authorisations at the speed layer's target rate (2,000 tx/s; ``BENCH_SOAK_RATE`` overrides) through the real risk
agents with the stream benchmark's trained fraud model (2 Faust worker processes, ``BENCH_SOAK_WORKERS``) on the
embedded noida-db broker, with the gateway envelopes of the stream benchmark (40 ms, ``BENCH_SOAK_ENVELOPE_MS``)
and a short topic retention (20 s, ``BENCH_SOAK_RETENTION_S``; 0 = production retention; see
``tests.faults.harness.SOAK_RETENTION_S``).
The network is in steady state: 2,000 cards filling every 2 days on average in event time, after a warm-up of 31
days of event time (tests/faults/harness.py ``soak``). Every window (``seconds``/24, 5-60 s) samples worker RSS,
the in-flight lag (authorisations sent but not yet decided) and the window's p99 latency.
Verdicts: ``memory_flat`` (RSS growth from the first to the last third <= max(40 MB, 15 %)), ``lag_flat`` (last-
third lag <= max(1.5 x first-third lag, half a second of traffic)), ``p99_within_target`` (every window's p99 <= 100
ms); lost and duplicated decisions are counted exactly.
"""

from __future__ import annotations

import os

from tests.faults import harness as H


def run(seconds: float | None) -> dict:
    """Soak for ``seconds`` (default 1800)."""
    seconds = float(seconds or 1800)
    rate = float(os.environ.get("BENCH_SOAK_RATE", H.SOAK_TARGET_RATE))
    workers = int(os.environ.get("BENCH_SOAK_WORKERS", "2"))
    # The workers load the settings' registry_dir = $FUELCARD_DATA_DIR/registry: the stream benchmark's
    # trained, promoted fraud model (the real engine, not rules-only).
    from benchmarks.bench_stream import BENCH_DATA_DIR, bench_registry, engine_info

    registry = bench_registry(BENCH_DATA_DIR / "registry")
    os.environ["FUELCARD_DATA_DIR"] = str(BENCH_DATA_DIR.absolute())
    # The stream benchmark's gateway window (40 ms; most of the pipeline's CPU is per Kafka round, and 5 ms
    # envelopes need ~8x the rounds, docs/STREAMING.md).
    envelope_ms = float(os.environ.get("BENCH_SOAK_ENVELOPE_MS", os.environ.get("BENCH_STREAM_ENVELOPE_MS", "40")))
    retention_s = float(os.environ.get("BENCH_SOAK_RETENTION_S", H.SOAK_RETENTION_S))
    return {**H.soak(seconds, rate=rate, workers=workers, envelope_ms=envelope_ms, retention_s=retention_s or None),
            "envelope_ms": envelope_ms, "retention_s": retention_s, **engine_info(registry)}

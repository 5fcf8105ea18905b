"""Window-feature backfill: the PyFlink job (local mini-cluster) versus the pure-Python replay of the core.

Both compute the per-card window features of ``fuelcard.window_spec`` over the same synthetic history
(90 days, ~50 transactions per card, time-ordered): Flink runs the generated SQL over a CSV export
(``streams.flink.job.run_file_backfill``, bounded streaming job, files out); Python replays every transaction
through ``fuelcard.features.update_card`` (the core's own replay; it computes the card feature vector, of
which the spec's window features are a part).

Default: 10,000,000 transactions (the issue's size; tens of minutes on a 2-core machine). ``BENCH_SECONDS=S``
scales down to about ``2,000 * S`` transactions (at least 20,000) and says so in the output.

Output: ``{"bench": "flink", "transactions": N, "flink_seconds": a, "python_replay_seconds": b, ...}``.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = 10_000_000
DAYS = 90
TX_PER_CARD = 50


def synthetic_history(n: int, seed: int = 5) -> dict[str, np.ndarray]:
    """``n`` transactions over ``n / 50`` cards and 90 days, sorted by time (epoch ms, distinct per card)."""
    rng = np.random.default_rng(seed)
    cards = max(1, n // TX_PER_CARD)
    start = 1_767_225_600_000  # 2026-01-01 UTC
    ts = np.sort(rng.integers(start, start + DAYS * 86_400_000, size=n, dtype=np.int64))
    ts = ts + np.arange(n, dtype=np.int64) % 997  # break exact ties
    ts.sort()
    return {
        "tx_id": np.char.add("t", np.arange(n).astype(str)),
        "card_id": np.char.add("c", rng.integers(0, cards, size=n).astype(str)),
        "station_id": np.char.add("S", rng.integers(0, 2000, size=n).astype(str)),
        "amount_fen": rng.integers(2_000, 60_000, size=n, dtype=np.int64),
        "ts_ms": ts,
    }


def write_csv(hist: dict[str, np.ndarray], path: Path) -> None:
    """The export the Flink backfill reads (``tx_id,card_id,station_id,amount_fen,ts_ms``, no header)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows(zip(hist["tx_id"].tolist(), hist["card_id"].tolist(), hist["station_id"].tolist(),
                        hist["amount_fen"].tolist(), hist["ts_ms"].tolist(), strict=True))


def python_replay(hist: dict[str, np.ndarray]) -> float:
    """Seconds to replay the history through the core's ``update_card`` (event-time order)."""
    from fuelcard.features import Tx, update_card

    started = time.perf_counter()
    states: dict = {}
    get = states.get
    for tx_id, card, station, amount, ts in zip(hist["tx_id"].tolist(), hist["card_id"].tolist(),
                                                hist["station_id"].tolist(), hist["amount_fen"].tolist(),
                                                hist["ts_ms"].tolist(), strict=True):
        state, _ = update_card(get(card), Tx(tx_id, ts / 1000.0, card, station, amount))
        states[card] = state
    return time.perf_counter() - started


def count_rows(folder: Path) -> int:
    """Rows written by the Flink file sink (finished part files)."""
    n = 0
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            with p.open("rb") as fh:
                n += sum(1 for _ in fh)
    return n


def run(seconds: float | None) -> dict:
    """Run the benchmark; ``seconds`` (BENCH_SECONDS) scales the number of transactions down."""
    from streams.flink.job import JobConfig, run_file_backfill

    n = FULL if seconds is None else int(min(FULL, max(20_000, 2_000 * seconds)))
    hist = synthetic_history(n)
    work = Path(tempfile.mkdtemp(prefix="bench-flink-"))
    try:
        src = work / "history.csv"
        write_csv(hist, src)
        # Per-transaction features only: the same set the Python replay computes (the TUMBLE/HOP aggregates
        # are extra outputs with no Python counterpart; HOP 24 h / 1 h writes ~24 rows per transaction).
        flink_s = run_file_backfill(source=src, out_dir=work / "out",
                                    config=JobConfig(parallelism=2, with_aggregates=False))
        rows = count_rows(work / "out" / "features")
        py_s = python_replay(hist)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "transactions": n,
        "flink_seconds": round(flink_s, 2),
        "python_replay_seconds": round(py_s, 2),
        "flink_rows": rows,
        "flink_tx_per_s": round(n / flink_s),
        "python_tx_per_s": round(n / py_s),
        "cards": max(1, n // TX_PER_CARD),
        "days": DAYS,
        "flink_includes": "JVM + mini-cluster start, SQL planning, CSV in/out, 4 OVER windows + joins, Python UDFs",
    }
    if n < FULL:
        out["note"] = f"scaled down by BENCH_SECONDS={seconds:g} from {FULL:,} to {n:,} transactions"
    return out

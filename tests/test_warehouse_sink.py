"""MicroBatchSink: batches of >= max_rows or every max_delay_s, thread-safe, flush on close, retries."""

from __future__ import annotations

import threading
import time

import pandas as pd

from warehouse.sink import MicroBatchSink, decision_row, transaction_row


class FakeWarehouse:
    """Records insert batches; can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.rows: list[dict] = []
        self.fail = 0
        self.lock = threading.Lock()

    def insert_df(self, table: str, df: pd.DataFrame) -> int:
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise ConnectionError("warehouse down")
            self.batches.append(len(df))
            self.rows.extend(df.to_dict("records"))
            return len(df)


def test_size_threshold_batches_of_max_rows() -> None:
    wh = FakeWarehouse()
    sink = MicroBatchSink(wh, "t", max_rows=1000, max_delay_s=30)  # type: ignore[arg-type]
    sink.add_many({"i": i} for i in range(3500))
    deadline = time.monotonic() + 5
    while sum(wh.batches) < 3000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(b >= 1000 for b in wh.batches) and sum(wh.batches) >= 3000
    stats = sink.close()
    assert sum(wh.batches) == 3500 and stats.rows_written == 3500 and stats.buffered == 0


def test_time_threshold_flushes_a_small_batch() -> None:
    wh = FakeWarehouse()
    sink = MicroBatchSink(wh, "t", max_rows=1000, max_delay_s=0.2)  # type: ignore[arg-type]
    sink.add({"i": 1})
    time.sleep(0.05)
    assert wh.batches == []  # not one row at a time
    deadline = time.monotonic() + 3
    while not wh.batches and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wh.batches == [1]
    sink.close()


def test_thread_safe_and_flush_on_close() -> None:
    wh = FakeWarehouse()
    sink = MicroBatchSink(wh, "t", max_rows=1000, max_delay_s=1.0)  # type: ignore[arg-type]

    def produce(k: int) -> None:
        for i in range(2500):
            sink.add({"k": k, "i": i})

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    assert len(wh.rows) == 10_000
    assert len({(r["k"], r["i"]) for r in wh.rows}) == 10_000
    per_thread = {}
    for r in wh.rows:  # order per producer is kept
        assert r["i"] == per_thread.get(r["k"], -1) + 1
        per_thread[r["k"]] = r["i"]


def test_failed_insert_keeps_rows_and_retries() -> None:
    wh = FakeWarehouse()
    wh.fail = 2
    sink = MicroBatchSink(wh, "t", max_rows=10, max_delay_s=0.05, retry_delay_s=0.05)  # type: ignore[arg-type]
    sink.add_many({"i": i} for i in range(25))
    stats = sink.close(timeout_s=5)
    assert stats.errors == 2 and "warehouse down" in stats.last_error
    assert [r["i"] for r in wh.rows] == list(range(25)) and stats.buffered == 0


def test_overflow_drops_oldest_and_counts() -> None:
    wh = FakeWarehouse()
    sink = MicroBatchSink(wh, "t", max_rows=1000, max_delay_s=10, max_buffer_rows=100,  # type: ignore[arg-type]
                          background=False)
    sink.add_many({"i": i} for i in range(150))
    assert sink.stats().dropped == 50
    sink.close()
    assert [r["i"] for r in wh.rows] == list(range(50, 150))


def test_event_converters() -> None:
    from datetime import UTC, datetime

    from fuelcard.events import Cancel, Decision, Outcome

    t0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
    row = transaction_row(Cancel(tx_id="t1", ts=t0, card_id="c", reason="timeout"), authorised_at=t0,
                          station_id="S1")
    assert row["status"] == "timeout" and row["version"] == 2 and row["ts"] == t0 and row["station_id"] == "S1"
    d = decision_row(Decision(tx_id="t1", card_id="c", ts=t0, outcome=Outcome.DECLINE, score=0.97,
                              reasons=("geo", "velocity"), model_version="m", ruleset_version="r", degraded=True))
    assert d["decision_id"] == "t1" and d["outcome"] == "decline" and d["reasons"] == "geo,velocity"
    assert d["degraded"] == 1 and d["version"] > 0

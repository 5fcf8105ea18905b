"""Micro-batching sink for the speed layer: stream events -> warehouse, never one row at a time.

``MicroBatchSink`` buffers rows for one table and inserts them when ``max_rows`` (default 1,000) are
buffered or the oldest buffered row is ``max_delay_s`` (default 1 s) old, whichever comes first. It is
thread-safe (``add`` may be called from any thread or from an asyncio agent: it only appends under a lock);
inserts run on a background thread, or synchronously via :meth:`flush`; :meth:`close` flushes what is left.

Inserts go through :meth:`Warehouse.insert_df`, which is idempotent on the fact tables with rollups, so the
at-least-once delivery of Kafka/Faust gives exactly-once effects in the warehouse. When the warehouse is
down the rows stay buffered (up to ``max_buffer_rows``; beyond that the oldest are dropped and counted)
and are retried: the payment path never blocks on the warehouse.

>>> # sink = MicroBatchSink(wh, "fact_risk_decisions"); sink.add(decision_row(decision)); sink.close()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from warehouse.engine import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkStats:
    """Counters of one sink (a snapshot)."""

    table: str
    rows_in: int
    rows_written: int
    batches: int
    buffered: int
    dropped: int
    errors: int
    last_error: str


class MicroBatchSink:
    """Buffer rows for ``table`` and insert them in batches (>= ``max_rows`` rows or every ``max_delay_s``)."""

    def __init__(
        self,
        wh: Warehouse,
        table: str,
        *,
        max_rows: int = 1_000,
        max_delay_s: float = 1.0,
        max_buffer_rows: int = 500_000,
        transform: Callable[[Any], Mapping[str, Any]] | None = None,
        background: bool = True,
        retry_delay_s: float = 1.0,
    ) -> None:
        if max_rows < 1 or max_delay_s <= 0:
            raise ValueError("max_rows must be >= 1 and max_delay_s > 0")
        self.wh = wh
        self.table = table
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.max_buffer_rows = max_buffer_rows
        self.transform = transform
        self.retry_delay_s = retry_delay_s
        self._buf: list[Mapping[str, Any]] = []
        self._first_at: float | None = None
        self._lock = threading.Lock()  # guards the buffer and counters
        self._flush_lock = threading.Lock()  # one insert at a time, in arrival order
        self._wake = threading.Event()
        self._closed = False
        self._retry_after = 0.0
        self.rows_in = self.rows_written = self.batches = self.dropped = self.errors = 0
        self.last_error = ""
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name=f"sink-{table}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ producer side
    def add(self, row: Any) -> None:
        """Buffer one row (a mapping, or anything ``transform`` turns into one). Never blocks on I/O."""
        self.add_many((row,))

    def add_many(self, rows: Iterable[Any]) -> None:
        """Buffer several rows at once."""
        items = [self.transform(r) if self.transform else r for r in rows]
        if not items:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError(f"sink for {self.table} is closed")
            if not self._buf:
                self._first_at = time.monotonic()
            self._buf.extend(items)
            self.rows_in += len(items)
            overflow = len(self._buf) - self.max_buffer_rows
            if overflow > 0:
                del self._buf[:overflow]
                self.dropped += overflow
            full = len(self._buf) >= self.max_rows
        if full:
            self._wake.set()

    # ------------------------------------------------------------ flushing
    def _due(self) -> bool:
        with self._lock:
            if not self._buf:
                return False
            if time.monotonic() < self._retry_after:
                return False
            age = time.monotonic() - (self._first_at or time.monotonic())
            return len(self._buf) >= self.max_rows or age >= self.max_delay_s

    def flush(self) -> int:
        """Insert everything buffered now (one batch); returns rows written. Failed rows stay buffered."""
        with self._flush_lock:
            with self._lock:
                batch, self._buf = self._buf, []
                self._first_at = None
            if not batch:
                return 0
            try:
                written = self.wh.insert_df(self.table, pd.DataFrame.from_records(batch))
            except Exception as exc:  # noqa: BLE001 - degrade: keep rows, retry later, never crash the stream
                with self._lock:
                    self._buf[:0] = batch  # put back in front, order kept
                    self._first_at = time.monotonic()
                    self.errors += 1
                    self.last_error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                    self._retry_after = time.monotonic() + self.retry_delay_s
                log.warning("warehouse sink %s: insert of %d rows failed (%s); will retry",
                            self.table, len(batch), self.last_error)
                return 0
            with self._lock:
                self.rows_written += written
                self.batches += 1
            return written

    def _loop(self) -> None:
        tick = min(0.05, self.max_delay_s / 4)
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            if self._due():
                self.flush()
            with self._lock:
                if self._closed and not self._buf:
                    return

    def close(self, *, timeout_s: float = 30.0) -> SinkStats:
        """Flush what is buffered and stop the background thread; returns the final counters."""
        with self._lock:
            self._closed = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.flush()
            with self._lock:
                if not self._buf:
                    break
            time.sleep(min(self.retry_delay_s, 0.2))
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.stats()

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self.table, self.rows_in, self.rows_written, self.batches, len(self._buf),
                             self.dropped, self.errors, self.last_error)

    def __enter__(self) -> MicroBatchSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- event -> row converters

_TX_KIND_STATUS = {"authorisation": ("authorised", 1), "capture": ("captured", 2), "refund": ("refunded", 3)}


def transaction_row(event: Any, *, authorised_at: Any = None, **extra: Any) -> dict[str, Any]:
    """A payment event (Authorisation/Capture/Cancel/Refund from :mod:`fuelcard.events`) as a
    ``fact_transactions`` row.

    ``ts`` must stay the *authorisation* time on every version of a purchase (it is part of the sort key):
    pass ``authorised_at`` for capture/cancel/refund events (the agent has it in its per-card state).
    ``extra`` fills columns the event lacks (member_id, region, is_fraud, …).
    """
    d = event.model_dump() if hasattr(event, "model_dump") else dict(event)
    kind = d.get("kind", "capture")
    if kind == "cancel":
        reason = d.get("reason", "cancelled")
        status, version = ("timeout" if reason == "timeout" else "cancelled"), 2
    else:
        status, version = _TX_KIND_STATUS.get(kind, ("captured", 2))
    event_ts = d.get("ts")
    row: dict[str, Any] = {k: d[k] for k in ("tx_id", "card_id", "station_id", "terminal_id", "device_id",
                                              "region", "member_id", "litres", "lat", "lon") if k in d}
    product = d.get("product")
    if product is not None:
        row["product"] = getattr(product, "value", product)
    if "amount_fen" in d:
        row["amount_fen"] = d["amount_fen"]
    row.update(status=status, version=version, ts=authorised_at or event_ts)
    if kind == "capture":
        row["capture_ts"] = event_ts
    row.update(extra)
    return row


def decision_row(decision: Any, *, station_id: str = "", version: int | None = None) -> dict[str, Any]:
    """A :class:`fuelcard.events.Decision` as a ``fact_risk_decisions`` row (reasons comma-joined,
    top features as JSON). ``version`` defaults to the decision time in ms, so a re-score replaces."""
    d = decision.model_dump(mode="json") if hasattr(decision, "model_dump") else dict(decision)
    ts = pd.Timestamp(d["ts"])
    outcome = d.get("outcome")
    return {
        "decision_id": d.get("event_id") or d["tx_id"],
        "version": version if version is not None else int(ts.value // 1_000_000),
        "tx_id": d["tx_id"],
        "card_id": d.get("card_id", ""),
        "station_id": station_id,
        "ts": ts,
        "outcome": getattr(outcome, "value", outcome),
        "score": float(d.get("score", 0.0)),
        "reasons": ",".join(d.get("reasons") or ()),
        "top_features": json.dumps(d.get("top_features") or [], separators=(",", ":")),
        "model_version": d.get("model_version", ""),
        "ruleset_version": d.get("ruleset_version", ""),
        "degraded": int(bool(d.get("degraded", False))),
        "latency_ms": float(d.get("latency_ms") or 0.0),
    }

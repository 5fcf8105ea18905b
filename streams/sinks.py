"""Where the sink agent writes: the warehouse (``warehouse.sink.MicroBatchSink``) or a stand-in.

A sink receives micro-batches of JSON rows per kind (``authorisations``, ``payments``, ``recharges``,
``redemptions``, ``decisions``, ``points-ledger``) and must be idempotent: a redelivered row (same event id)
must not be counted twice.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import orjson


class Sink(Protocol):
    """Micro-batch writer used by the sink agent."""

    def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Persist rows of one kind (idempotent by the rows' ids)."""
        ...


class NullSink:
    """Drops everything (benchmarks of the risk path)."""

    def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        return None


def row_id(kind: str, row: dict[str, Any]) -> str:
    """The idempotency key of a row: its event id, or the natural id of its kind."""
    for k in ("event_id", "movement_id"):
        if row.get(k):
            return str(row[k])
    if kind == "payments":
        return f"{row.get('kind')}:{row.get('refund_id') or row.get('tx_id')}"
    for k in ("tx_id", "recharge_id", "redemption_id"):
        if row.get(k):
            return str(row[k])
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()


class MemorySink:
    """Keeps rows in memory, deduplicated by :func:`row_id` (tests, demo summaries)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.writes = 0
        self._lock = threading.Lock()

    def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self.writes += 1
            for r in rows:
                self.rows[kind][row_id(kind, r)] = r


class JsonlSink:
    """Appends rows to ``DIR/<kind>[@tag].jsonl`` (tag: one file per process); readers dedupe by :func:`row_id`."""

    def __init__(self, directory: str | Path, *, tag: str = "") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tag = tag

    def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        path = self.dir / f"{kind}{('@' + self.tag) if self.tag else ''}.jsonl"
        with path.open("ab") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def read_jsonl_dir(directory: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Read a :class:`JsonlSink` directory back, deduplicated: kind → id → row."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(Path(directory).glob("*.jsonl")):
        kind = path.stem.split("@", 1)[0]
        for line in path.read_bytes().splitlines():
            if line.strip():
                r = orjson.loads(line)
                out[kind][row_id(kind, r)] = r
    return out


class WarehouseSink:
    """Adapter to ``warehouse.sink.MicroBatchSink`` (the warehouse engineer's idempotent loader)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        self.inner.write(kind, rows)


def make_sink(spec: str | None) -> Sink:
    """A sink from a spec string: ``null``, ``jsonl:DIR[:tag]`` or ``warehouse:URL``."""
    if not spec or spec == "null":
        return NullSink()
    if spec.startswith("jsonl:"):
        rest = spec[len("jsonl:"):]
        directory, _, tag = rest.partition("::")
        return JsonlSink(directory, tag=tag)
    if spec.startswith("warehouse:"):
        from warehouse.sink import MicroBatchSink  # type: ignore[import-not-found]

        return WarehouseSink(MicroBatchSink.from_url(spec[len("warehouse:"):]))  # type: ignore[attr-defined]
    raise ValueError(f"unknown sink spec {spec!r}")

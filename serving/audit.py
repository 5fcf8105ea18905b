"""The audit trail of personal-data reads: who (key id, group), what (endpoint, subjects), when, why.

Events are buffered in memory and written in small batches (never one warehouse insert per request) by a
background thread: every :attr:`interval_s` seconds, or at once when :attr:`batch` events are waiting; also on
:meth:`flush` and on shutdown. Reading the trail flushes first, so a read always sees every earlier event.
:meth:`record` never writes itself (it may run on the server's event loop, where an insert would stall every
request): only when the writer has fallen :attr:`max_buffer` events behind (warehouse down or very slow) does it
write inline, as back-pressure, so the buffer stays bounded and no event is dropped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from serving.ports import Row, SqlPort

AUDIT_TABLE = "audit_log"
# Same shape as the warehouse migration's ``audit_log`` (created here only if migrations have not run).
AUDIT_DDL = f"""
CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (
    ts DateTime('UTC'),
    actor String,
    action String,
    subject String,
    detail String
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (ts, actor)
"""


def audit_event(*, request_id: str, key_id: str, group: str, action: str, subjects: Sequence[str],
                fields: Sequence[str], unmasked: bool, purpose: str, status: int = 200) -> Row:
    """Build one audit row (subjects are member ids / tx ids, never personal values)."""
    return {"ts": datetime.now(UTC).replace(microsecond=0), "request_id": request_id,
            "key_id": key_id, "key_group": group, "action": action,
            "subjects": ",".join(subjects)[:4000], "fields": ",".join(fields), "unmasked": int(unmasked),
            "purpose": purpose[:200], "status": status}


class _Buffered:
    batch = 200
    interval_s = 1.0
    max_buffer = 20_000

    def __init__(self) -> None:
        self._buf: list[Row] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit-flush", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001,S110 - retried on the next tick; never kill the thread
                pass

    def record(self, event: Row) -> None:
        with self._lock:
            self._buf.append(event)
            n = len(self._buf)
        if n >= self.max_buffer:
            self.flush()  # back-pressure: the writer cannot keep up
        elif n >= self.batch:
            self._wake.set()

    def flush(self) -> None:
        with self._lock:
            rows, self._buf = self._buf, []
        if rows:
            try:
                self._write(rows)
            except Exception:
                with self._lock:
                    self._buf[:0] = rows
                raise

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.flush()

    def _write(self, rows: list[Row]) -> None:
        raise NotImplementedError


class WarehouseAuditStore(_Buffered):
    """Audit rows in a warehouse table (created if missing)."""

    def __init__(self, sql: SqlPort) -> None:
        self.sql = sql
        sql.execute(AUDIT_DDL)
        super().__init__()

    def _write(self, rows: list[Row]) -> None:
        out = [to_warehouse_row(r) for r in rows]
        insert_json = getattr(self.sql, "insert_json", None)
        if insert_json is not None:
            insert_json(AUDIT_TABLE, out)
        else:
            self.sql.insert(AUDIT_TABLE, out)

    def recent(self, *, limit: int, key_id: str | None = None) -> list[Row]:
        self.flush()
        where = "WHERE startsWith(actor, {key_id:String})" if key_id else ""
        params = {"key_id": key_id + ":"} if key_id else {}
        rows = self.sql.query(
            f"SELECT ts, actor, action, subject, detail FROM {AUDIT_TABLE} {where} "
            f"ORDER BY ts DESC LIMIT {int(limit)}", params)
        return [_public(from_warehouse_row(r)) for r in rows]


class JsonlAuditStore(_Buffered):
    """Audit rows appended to a JSON-lines file (used only when no warehouse is configured)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__()

    def _write(self, rows: list[Row]) -> None:
        with self.path.open("a") as fh:
            for r in rows:
                fh.write(json.dumps(r, default=str) + "\n")

    def recent(self, *, limit: int, key_id: str | None = None) -> list[Row]:
        self.flush()
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        if key_id:
            rows = [r for r in rows if r["key_id"] == key_id]
        return [_public(r) for r in reversed(rows[-limit:] if not key_id else rows)][:limit]


def to_warehouse_row(r: Row) -> Row:
    """Map an audit event onto the warehouse ``audit_log`` columns (who → actor, why → detail.purpose)."""
    detail = {"fields": r["fields"], "unmasked": r["unmasked"], "purpose": r["purpose"],
              "request_id": r["request_id"], "status": r["status"]}
    return {"ts": r["ts"], "actor": f"{r['key_id']}:{r['key_group']}", "action": r["action"],
            "subject": r["subjects"], "detail": json.dumps(detail, sort_keys=True)}


def from_warehouse_row(r: Row) -> Row:
    """Inverse of :func:`to_warehouse_row`."""
    key_id, _, group = str(r["actor"]).partition(":")
    try:
        detail = json.loads(r.get("detail") or "{}")
    except ValueError:
        detail = {}
    return {"ts": r["ts"], "key_id": key_id, "key_group": group, "action": r["action"], "subjects": r["subject"],
            "fields": detail.get("fields", ""), "unmasked": detail.get("unmasked", 0),
            "purpose": detail.get("purpose", ""), "request_id": detail.get("request_id", ""),
            "status": detail.get("status", 0)}


def _public(r: Row) -> Row:
    out = dict(r)
    out["ts"] = str(out["ts"])
    out["subjects"] = [s for s in str(out.get("subjects", "")).split(",") if s]
    out["fields"] = [s for s in str(out.get("fields", "")).split(",") if s]
    out["unmasked"] = bool(int(out.get("unmasked", 0)))
    return out

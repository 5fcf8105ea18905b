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
    """Writes each micro-batch straight into the warehouse fact tables (idempotent there: ``insert_df`` drops
    rows whose key and version are already stored). The sink agent calls it after every micro-batch and
    acknowledges the batch only once it returned, so a crash means a replay, never a loss."""

    def __init__(self, wh: Any, include: tuple[str, ...] | None = None) -> None:
        self.wh = wh
        self.include = include or WAREHOUSE_KINDS
        self._auths: dict[str, dict[str, Any]] = {}

    _AUTH_COLUMNS = ("ts", "station_id", "product", "terminal_id", "device_id", "region", "lat", "lon",
                     "amount_fen")

    def stored_authorisations(self, tx_ids: set[str], chunk: int = 200) -> dict[str, dict[str, Any]]:
        """Authorisation time, station and product of purchases already in ``fact_transactions`` (the
        earliest version of each), as authorisation-like rows keyed by tx_id; unknown ids are left out."""
        import pandas as pd

        out: dict[str, dict[str, Any]] = {}
        ids = sorted(tx_ids)
        cols = ", ".join(("tx_id", "version", *self._AUTH_COLUMNS))
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            marks = ", ".join(f"{{t{j}:String}}" for j in range(len(part)))
            df = self.wh.query_df(f"SELECT {cols} FROM fact_transactions WHERE tx_id IN ({marks})",  # noqa: S608
                                  {f"t{j}": t for j, t in enumerate(part)})
            if df.empty:
                continue
            df = df.sort_values(["tx_id", "version"]).drop_duplicates("tx_id", keep="first")
            for rec in df.to_dict("records"):
                ts = pd.Timestamp(rec["ts"])
                ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
                row = {k: rec[k] for k in self._AUTH_COLUMNS if k in rec and rec[k] is not None}
                row.update(tx_id=str(rec["tx_id"]), ts=ts.isoformat())
                if "amount_fen" in row:
                    row["amount_fen"] = int(row["amount_fen"])
                out[row["tx_id"]] = row
        return out

    def healthy(self) -> bool:
        """True when the warehouse answers (a failed write is then caused by its rows, not an outage)."""
        try:
            self.wh.version()
        except Exception:  # noqa: BLE001 - any failure means "not reachable now"
            return False
        return True

    def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        if kind == "authorisations":
            for r in rows:  # remember authorisation time/station for later capture/refund/decision rows
                self._auths[r["tx_id"]] = r
            if len(self._auths) > 500_000:
                for k in list(self._auths)[:100_000]:
                    del self._auths[k]
        grouped: dict[str, dict[str, dict[str, Any]]] = {kind: {row_id(kind, r): r for r in rows}}
        if kind != "authorisations":
            if kind in ("payments", "decisions"):
                missing = {str(r["tx_id"]) for r in rows if r.get("tx_id") and r["tx_id"] not in self._auths}
                if missing:  # sink restarted since the authorisation was written: its time is in the warehouse
                    self._auths.update(self.stored_authorisations(missing))
            grouped["authorisations"] = self._auths
        include = tuple(k for k in self.include if k == kind)
        for table, df in warehouse_frames(grouped, include=include).items():
            if len(df):
                self.wh.insert_df(table, df)


# Rows of the source topics are validated (and dead-lettered) by the agents that consume them; the sink only
# drops those. Rows of topics nobody else validates are dead-lettered by the sink itself.
SOURCE_VALIDATED_KINDS = frozenset({"authorisations", "payments", "redemptions"})
_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "decisions": ("tx_id", "ts", "outcome"),
    "points-ledger": ("movement_id", "ts", "kind", "points"),
    "recharges": ("recharge_id", "ts", "card_id", "amount_fen"),
}
# ClickHouse DateTime holds 1970-01-01 .. 2106-02-07
_TS_MIN, _TS_MAX = 0.0, 4_294_967_295.0


def validate_row(kind: str, row: dict[str, Any], *, max_future_skew_s: float | None = None,
                 now: float | None = None) -> None:
    """Raise (``ValueError`` or pydantic ``ValidationError``) if a sink row cannot be stored in the warehouse:
    not the event model of its kind, required keys missing, or a timestamp outside DateTime's range (or, for
    authorisations, further ahead of ``now`` than ``max_future_skew_s``, like the risk agent)."""
    import time

    import pandas as pd

    from fuelcard.events import Authorisation, Cancel, Capture, PointsRedemption, Refund

    if kind == "authorisations":
        Authorisation.model_validate(row)
    elif kind == "payments":
        model = {"capture": Capture, "cancel": Cancel, "refund": Refund}.get(row.get("kind"))  # type: ignore[arg-type]
        if model is None:
            raise ValueError(f"unknown payment kind {row.get('kind')!r}")
        model.model_validate(row)
    elif kind == "redemptions":
        PointsRedemption.model_validate(row)
    else:
        missing = [k for k in _REQUIRED_KEYS.get(kind, ()) if row.get(k) is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        for k in ("points", "amount_fen"):
            if k in _REQUIRED_KEYS.get(kind, ()):
                int(row[k])
    ts = pd.Timestamp(row["ts"]) if row.get("ts") is not None else None
    if ts is not None:
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        secs = ts.timestamp()
        if not _TS_MIN <= secs <= _TS_MAX:
            raise ValueError(f"ts: {row['ts']} outside the warehouse's DateTime range")
        if kind == "authorisations" and max_future_skew_s is not None:
            ahead = secs - (time.time() if now is None else now)
            if ahead > max_future_skew_s:
                raise ValueError(f"ts: far-future timestamp ({row['ts']})")


def make_sink(spec: str | None) -> Sink:
    """A sink from a spec string: ``null``, ``jsonl:DIR[:tag]`` or ``warehouse:URL``."""
    if not spec or spec == "null":
        return NullSink()
    if spec.startswith("jsonl:"):
        rest = spec[len("jsonl:"):]
        directory, _, tag = rest.partition("::")
        return JsonlSink(directory, tag=tag)
    if spec.startswith("warehouse:"):
        from warehouse import connect

        wh = connect(spec[len("warehouse:"):])
        wh.migrate()
        return WarehouseSink(wh)
    raise ValueError(f"unknown sink spec {spec!r}")


# ---------------------------------------------------------------- rows for the warehouse fact tables

_LEDGER_KIND = {"accrual": "earn", "reversal": "reverse", "redemption": "redeem", "expiry": "expire"}
WAREHOUSE_KINDS = ("authorisations", "payments", "recharges", "decisions", "points-ledger")


def _ts(v: Any) -> Any:
    import pandas as pd

    return pd.Timestamp(v) if v is not None else None


def warehouse_frames(rows: dict[str, dict[str, dict[str, Any]]],
                     include: tuple[str, ...] = WAREHOUSE_KINDS) -> dict[str, Any]:
    """Sink rows (kind → id → JSON row) as DataFrames for ``fact_transactions``, ``fact_risk_decisions``,
    ``fact_points_ledger`` and ``fact_recharges`` (column names of warehouse/migrations)."""
    import pandas as pd

    from warehouse.sink import decision_row, transaction_row

    auths = rows.get("authorisations", {})
    by_tx = {r["tx_id"]: r for r in auths.values() if not str(r.get("tx_id", "")).startswith("probe-")}
    out: dict[str, Any] = {}
    if "authorisations" in include or "payments" in include:
        tx_rows = []
        if "authorisations" in include:
            for r in by_tx.values():
                tx_rows.append(transaction_row({**r, "ts": _ts(r["ts"])}))
        if "payments" in include:
            for r in rows.get("payments", {}).values():
                a = by_tx.get(r.get("tx_id"), {})
                extra = {k: a[k] for k in ("station_id", "product", "terminal_id", "device_id", "region", "lat",
                                           "lon") if k in a and k not in r}
                if r.get("kind") in ("cancel", "refund") and "amount_fen" not in r and "amount_fen" in a:
                    extra["amount_fen"] = a["amount_fen"]
                row = transaction_row({**r, "ts": _ts(r["ts"])}, authorised_at=_ts(a["ts"]) if a else None,
                                      **extra)
                tx_rows.append(row)
        out["fact_transactions"] = pd.DataFrame.from_records(tx_rows)
    if "decisions" in include:
        drows = [decision_row(d, station_id=by_tx.get(d["tx_id"], {}).get("station_id", ""))
                 for d in rows.get("decisions", {}).values() if not str(d.get("tx_id", "")).startswith("probe-")]
        out["fact_risk_decisions"] = pd.DataFrame.from_records(drows)
    if "points-ledger" in include:
        lrows = [{"entry_id": m["movement_id"], "ts": _ts(m["ts"]), "member_id": m.get("member_id") or "",
                  "card_id": "", "tx_id": m.get("tx_id") or "", "kind": _LEDGER_KIND[m["kind"]],
                  "points": int(m["points"]), "note": f"{m.get('account_id', '')} {m.get('reason', '')}".strip()}
                 for m in rows.get("points-ledger", {}).values() if m.get("kind") in _LEDGER_KIND]
        out["fact_points_ledger"] = pd.DataFrame.from_records(lrows)
    if "recharges" in include:
        rrows = [{"recharge_id": r["recharge_id"], "ts": _ts(r["ts"]), "card_id": r["card_id"],
                  "amount_fen": int(r["amount_fen"]), "batch_id": r.get("batch_id") or ""}
                 for r in rows.get("recharges", {}).values()]
        out["fact_recharges"] = pd.DataFrame.from_records(rrows)
    return out

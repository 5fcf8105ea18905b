"""Adapters from the serving Protocols to the real warehouse, model registry, risk router and broker.

Warehouse reads use the warehouse's own tables and named queries (``warehouse.queries``); the review queue's
claims and resolutions live in one serving-owned table, ``review_labels`` (created if missing), which the
fraud-model training reads as labels. Model loaders live in :mod:`serving.model_views`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from fuelcard.settings import Settings
from serving.ports import Conflict, NotFound, NotReady, Row

log = logging.getLogger("serving.adapters")


# ---------------------------------------------------------------- warehouse connection


class WarehouseSql:
    """:class:`serving.ports.SqlPort` over a ``warehouse`` connection (chdb, server, or the owner's service)."""

    def __init__(self, wh: Any) -> None:
        self.wh = wh
        self.engine = getattr(wh, "engine", "?")

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
        return self.query_df(sql, params).to_dict("records")

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return self.wh.query_df(sql, params or None)
        except Exception as exc:
            raise _as_not_ready(exc) from None

    def named(self, name: str, **params: Any) -> pd.DataFrame:
        try:
            return self.wh.named_query(name, **params)
        except Exception as exc:
            raise _as_not_ready(exc) from None

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        if rows:
            self.wh.insert_df(table, pd.DataFrame(list(rows)), dedup=False)

    def execute(self, sql: str) -> None:
        self.wh.execute(sql)

    def insert_json(self, table: str, rows: Sequence[Row]) -> None:
        """Insert flat rows (scalars, datetimes) as inline ``JSONEachRow`` data on the embedded engine: no pandas
        frame to build and cast (about a third of the CPU of :meth:`insert` for an audit batch, most of it
        holding the GIL). Other engines: :meth:`insert`."""
        if not rows:
            return
        if self.engine != "chdb":
            self.insert(table, rows)
            return
        from warehouse.params import IDENTIFIER

        if not IDENTIFIER.match(table):
            raise ValueError(f"bad table name {table!r}")
        self.wh.execute(f"INSERT INTO {table} FORMAT JSONEachRow\n" + "\n".join(_json_line(r) for r in rows))


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return (v.astimezone(UTC) if v.tzinfo else v).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def _json_line(row: Row) -> str:
    """One JSON object; braces inside string values written as ``\\u007b``/``\\u007d`` (the same text to the
    JSON parser) so that no value can look like a ``{name:Type}`` query placeholder."""
    text = json.dumps(row, default=_json_value)
    return "{" + text[1:-1].replace("{", "\\u007b").replace("}", "\\u007d") + "}"


def _as_not_ready(exc: Exception) -> NotReady:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if "UNKNOWN_TABLE" in first or "doesn't exist" in first or "does not exist" in first:
        return NotReady("warehouse", "warehouse not loaded: a table is missing (run `fuelcard warehouse migrate`)")
    return NotReady("warehouse", f"warehouse query failed ({type(exc).__name__})")


def connect_warehouse(settings: Settings) -> tuple[WarehouseSql | None, str | None]:
    """Open the warehouse named by the settings; (None, reason) when it cannot be opened."""
    if settings.warehouse_url.startswith("none:"):
        return None, "disabled (warehouse_url none://)"
    try:
        try:
            from warehouse import connect
        except ImportError:
            from warehouse.engine import connect
        wh = connect(settings)
    except Exception as exc:  # noqa: BLE001 - serve what we can; /ready reports the warehouse as down
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        log.warning("warehouse not available: %s", reason)
        return None, reason
    return WarehouseSql(wh), None


# ---------------------------------------------------------------- analytics (points, contacts, dashboard)


def _window(sql: WarehouseSql, days: int) -> tuple[date, date]:
    """The last ``days`` days that have data (the simulation may be in the past or the future)."""
    rows = sql.query("SELECT max(date) AS d FROM fact_station_sales")
    last = rows[0]["d"] if rows and rows[0].get("d") is not None else None
    end = pd.Timestamp(last).date() if last is not None and pd.Timestamp(last).year > 1970 else datetime.now(UTC).date()
    return end - timedelta(days=max(days, 1) - 1), end


class WarehouseAnalytics:
    """Points, member contacts (encrypted) and dashboard datasets from the warehouse."""

    def __init__(self, sql: WarehouseSql) -> None:
        self.sql = sql
        self._window_cache: tuple[float, int, tuple[date, date]] | None = None
        self._lock = threading.Lock()

    def ping(self) -> bool:
        rows = self.sql.query("SELECT 1 AS ok")
        return bool(rows and int(rows[0]["ok"]) == 1)

    def points_balance(self, member_id: str) -> Row:
        rows = self.sql.query(
            "SELECT sumIf(points, kind IN ('earn', 'accrual')) AS issued, "
            "-sumIf(points, kind IN ('redeem', 'redemption')) AS redeemed, "
            "-sumIf(points, kind IN ('expire', 'expiry')) AS expired, "
            "-sumIf(points, kind IN ('reverse', 'reversal')) AS reversed, "
            "sum(points) AS balance, count() AS n, max(ts) AS last_ts "
            "FROM fact_points_ledger FINAL WHERE member_id = {member_id:String}", {"member_id": member_id})
        if not rows or int(rows[0]["n"] or 0) == 0:
            known = self.sql.query("SELECT count() AS n FROM dim_member FINAL WHERE member_id = {m:String}",
                                   {"m": member_id})
            if not known or int(known[0]["n"]) == 0:
                raise NotFound("unknown member")
            return {"member_id": member_id, "balance": 0, "issued": 0, "redeemed": 0, "expired": 0, "reversed": 0}
        r = rows[0]
        last = pd.Timestamp(r["last_ts"])
        return {"member_id": member_id, "balance": int(r["balance"]), "issued": int(r["issued"]),
                "redeemed": int(r["redeemed"]), "expired": int(r["expired"]), "reversed": int(r["reversed"]),
                "last_movement_at": (last.tz_localize("UTC") if last.tzinfo is None else last).isoformat()}

    def points_history(self, member_id: str, *, limit: int, offset: int) -> list[Row]:
        rows = self.sql.query(
            "SELECT entry_id, ts, kind, points, tx_id, note FROM fact_points_ledger FINAL "
            "WHERE member_id = {member_id:String} ORDER BY ts DESC, entry_id LIMIT {limit:UInt32} "
            "OFFSET {offset:UInt32}", {"member_id": member_id, "limit": limit, "offset": offset})
        if not rows and offset == 0:
            self.points_balance(member_id)  # raises NotFound for an unknown member
        return rows

    def member_contact(self, member_ids: Sequence[str]) -> dict[str, Row]:
        if not member_ids:
            return {}
        ids = list(dict.fromkeys(member_ids))[:5000]
        rows = self.sql.query(
            "SELECT member_id, phone_enc, id_number_enc FROM dim_member FINAL "
            "WHERE has(splitByChar(',', {ids:String}), member_id)", {"ids": ",".join(ids)})
        return {str(r["member_id"]): r for r in rows}

    MASKED_TTL_S = 600.0

    def masked_contacts(self, member_ids: Sequence[str]) -> dict[str, Row]:
        """Display masks (``phone``, ``id_number``) the warehouse stores next to the ciphertext, from an
        in-memory copy refreshed every 10 minutes in the background: masked display never decrypts and never
        puts a warehouse query on the request path."""
        import time

        cache = getattr(self, "_masked", None)
        now = time.monotonic()
        if cache is None:
            self._masked = cache = (now, self._load_masked())
        elif now - cache[0] > self.MASKED_TTL_S and not getattr(self, "_refreshing", False):
            self._refreshing = True

            def refresh() -> None:
                try:
                    self._masked = (time.monotonic(), self._load_masked())
                except Exception:  # noqa: BLE001,S110 - keep the previous copy; retried on the next request
                    pass
                finally:
                    self._refreshing = False

            threading.Thread(target=refresh, name="masked-contacts", daemon=True).start()
        table = cache[1]
        return {m: table[m] for m in member_ids if m in table}

    def _load_masked(self) -> dict[str, Row]:
        rows = self.sql.query("SELECT member_id, phone_masked, id_number_masked FROM dim_member FINAL")
        return {str(r["member_id"]): {"phone": r["phone_masked"] or None, "id_number": r["id_number_masked"] or None}
                for r in rows}

    def window(self, days: int) -> tuple[date, date]:
        import time

        with self._lock:
            if self._window_cache and self._window_cache[1] == days and time.monotonic() - self._window_cache[0] < 30:
                return self._window_cache[2]
        w = _window(self.sql, days)
        with self._lock:
            self._window_cache = (time.monotonic(), days, w)
        return w

    def _named(self, name: str, **params: Any) -> pd.DataFrame:
        return self.sql.named(name, **params)

    def dashboard(self, name: str, params: dict[str, Any]) -> list[Row]:
        """Dashboard datasets, from the warehouse's named queries over its rollups (plus two dimension reads)."""
        start, end = self.window(int(params.get("days") or 30))
        rng = {"date_from": start.isoformat(), "date_to": end.isoformat()}
        if name == "sales_by_station":
            return self._named("top_stations", **rng, limit=15).to_dict("records")
        if name in ("sales_by_product", "sales_by_day"):
            df = self._named("sales_daily", **rng)
            if df.empty:
                return []
            key = "product" if name == "sales_by_product" else "date"
            cols = [c for c in ("captured", "litres", "gross_fen", "refund_fen", "net_fen") if c in df]
            return df.groupby(key, as_index=False)[cols].sum().sort_values(key).to_dict("records")
        if name == "sales_by_hour":
            rows = self._named("sales_by_hour_of_day", **rng).to_dict("records")
            for r in rows:  # the network lives in UTC+8
                r["hour_local"] = (int(r["hour_utc"]) + 8) % 24
            return sorted(rows, key=lambda r: r["hour_local"])
        if name == "risk_kpis":
            df = self._named("risk_decisions_by_outcome", **rng)
            if df.empty:
                return []
            return df.groupby("outcome", as_index=False)[["decisions", "degraded"]].sum().to_dict("records")
        if name == "risk_daily":
            return self._named("risk_kpis_daily", **rng).to_dict("records")
        if name == "points_flow":
            return self._named("points_daily", **rng).to_dict("records")
        if name == "stations_map":
            st = self.sql.query_df("SELECT station_id, name, region, station_type, lat, lon FROM dim_station FINAL "
                                   "ORDER BY station_id LIMIT 5000")
            sales = self._named("top_stations", **rng, limit=5000)
            if not sales.empty:
                st = st.merge(sales[["station_id", "net_fen"]], on="station_id", how="left")
            return st.to_dict("records")
        if name == "member_density":
            # Homes on a ~0.02 degree grid (about 2 km): counts only, never a member's own coordinates.
            return self.sql.query(
                "SELECT round(home_lat / 0.02) * 0.02 AS lat, round(home_lon / 0.02) * 0.02 AS lon, "
                "count() AS members FROM dim_member FINAL WHERE home_lat != 0 "
                "GROUP BY lat, lon HAVING members >= 3 ORDER BY members DESC LIMIT 3000")
        if name == "actual_daily":
            return self.sql.query(
                "SELECT date, product, sum(litres) AS litres FROM fact_station_sales FINAL "
                "WHERE station_id = {station_id:String} AND date >= {date_from:Date} AND date <= {date_to:Date} "
                "GROUP BY date, product ORDER BY date, product", {**rng, "station_id": params["station_id"]})
        if name == "tank_alerts":
            return self._named("tank_alerts", **rng, limit=int(params.get("limit") or 100)).to_dict("records")
        raise NotFound(f"unknown dashboard dataset {name}")


# ---------------------------------------------------------------- review queue


REVIEW_TABLE = "review_labels"
REVIEW_DDL = f"""
CREATE TABLE IF NOT EXISTS {REVIEW_TABLE} (
    tx_id String,
    version UInt64,
    status String,
    reviewer String,
    label String,
    is_fraud Nullable(UInt8),
    note String,
    ts DateTime('UTC')
) ENGINE = ReplacingMergeTree(version) ORDER BY tx_id
"""


class WarehouseReviews:
    """Review cases = decisions with outcome ``review``; claims and resolutions in ``review_labels``.

    A resolution is a labelled row (``is_fraud`` 1/0, reviewer, time) that the fraud-model training reads as a
    label known from ``ts`` on. A lock serialises claim/resolve in this process; the table's version column
    makes the latest state win.
    """

    def __init__(self, sql: WarehouseSql) -> None:
        self.sql = sql
        self._lock = threading.Lock()
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            try:
                self.sql.execute(REVIEW_DDL)
            except Exception as exc:
                raise _as_not_ready(exc) from None
            self._ready = True

    _CASES = (
        "SELECT d.tx_id AS tx_id, d.ts AS ts, d.card_id AS card_id, d.station_id AS station_id, d.score AS score, "
        "d.reasons AS reasons, d.model_version AS model_version, d.ruleset_version AS ruleset_version, "
        "if(l.status = '', 'open', l.status) AS status, l.reviewer AS reviewer, l.label AS label "
        "FROM (SELECT tx_id, ts, card_id, station_id, score, reasons, model_version, ruleset_version "
        "      FROM fact_risk_decisions FINAL WHERE outcome = 'review') AS d "
        "ANY LEFT JOIN (SELECT tx_id, status, reviewer, label FROM review_labels FINAL) AS l USING tx_id "
    )

    def list_cases(self, *, status: str | None, limit: int, offset: int) -> tuple[list[Row], int]:
        self._ensure()
        where = "WHERE status = {status:String} " if status else ""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        inner = self._CASES
        rows = self.sql.query(f"SELECT * FROM ({inner}) {where}ORDER BY ts, tx_id LIMIT {{limit:UInt32}} "
                              f"OFFSET {{offset:UInt32}}", params)
        total = self.sql.query(f"SELECT count() AS n FROM ({inner}) {where}",
                               {k: v for k, v in params.items() if k == "status"})
        return [_case(r) for r in rows], int(total[0]["n"]) if total else 0

    def get_case(self, tx_id: str) -> Row:
        self._ensure()
        rows = self.sql.query(
            "SELECT tx_id, ts, card_id, station_id, outcome, score, reasons, top_features, model_version, "
            "ruleset_version, degraded FROM fact_risk_decisions FINAL WHERE tx_id = {tx_id:String} LIMIT 1",
            {"tx_id": tx_id})
        if not rows:
            raise NotFound("unknown case")
        case = _case(rows[0])
        tx = self.sql.query("SELECT member_id, product, amount_fen, litres, status AS tx_status, is_fraud "
                            "FROM fact_transactions FINAL WHERE tx_id = {tx_id:String} LIMIT 1", {"tx_id": tx_id})
        if tx:
            case.update({k: v for k, v in tx[0].items() if k != "is_fraud"})
        state = self._state(tx_id)
        case.update({"status": state.get("status") or ("open" if case.get("outcome") == "review" else "not_queued"),
                     "reviewer": state.get("reviewer") or None, "label": state.get("label") or None})
        return case

    def _state(self, tx_id: str) -> Row:
        rows = self.sql.query("SELECT status, reviewer, label, version FROM review_labels FINAL "
                              "WHERE tx_id = {tx_id:String}", {"tx_id": tx_id})
        return rows[0] if rows else {}

    def _write(self, tx_id: str, version: int, **fields: Any) -> Row:
        row = {"tx_id": tx_id, "version": version, "status": fields["status"], "reviewer": fields["reviewer"],
               "label": fields.get("label", ""), "is_fraud": fields.get("is_fraud"), "note": fields.get("note", ""),
               "ts": datetime.now(UTC)}
        self.sql.insert(REVIEW_TABLE, [row])
        return {k: row[k] for k in ("tx_id", "status", "reviewer", "label", "ts")}

    def claim(self, tx_id: str, *, reviewer: str) -> Row:
        self._ensure()
        with self._lock:
            case = self.get_case(tx_id)
            if case.get("outcome") != "review":
                raise Conflict("this decision was not sent to review")
            state = self._state(tx_id)
            if state.get("status") == "resolved":
                raise Conflict("case already resolved")
            if state.get("status") == "claimed" and state.get("reviewer") != reviewer:
                raise Conflict("case claimed by another reviewer")
            return self._write(tx_id, int(state.get("version") or 0) + 1, status="claimed", reviewer=reviewer)

    def resolve(self, tx_id: str, *, reviewer: str, label: str, note: str) -> Row:
        self._ensure()
        with self._lock:
            state = self._state(tx_id)
            if state.get("status") != "claimed" or state.get("reviewer") != reviewer:
                if not state and not self.sql.query(
                        "SELECT 1 AS x FROM fact_risk_decisions FINAL WHERE tx_id = {t:String} LIMIT 1", {"t": tx_id}):
                    raise NotFound("unknown case")
                raise Conflict("claim the case before resolving it" if state.get("status") != "resolved"
                               else "case already resolved")
            return self._write(tx_id, int(state.get("version") or 0) + 1, status="resolved", reviewer=reviewer,
                               label=label, is_fraud=1 if label == "fraud" else 0, note=note)


def _case(r: Row) -> Row:
    out = dict(r)
    for key in ("reasons", "top_features"):
        v = out.get(key)
        if isinstance(v, str) and v[:1] in "[{":
            try:
                out[key] = json.loads(v)
            except ValueError:
                pass
    for key in ("reviewer", "label"):
        if out.get(key) == "":
            out[key] = None
    return out


# ---------------------------------------------------------------- metrics sources


def decision_counts(sql: WarehouseSql) -> Callable[[], dict[str, int]]:
    """Decisions by outcome in the warehouse (all time), for the Prometheus scrape."""

    def read() -> dict[str, int]:
        df = sql.named("risk_decisions_by_outcome")
        if df.empty:
            return {}
        return {str(k): int(v) for k, v in df.groupby("outcome")["decisions"].sum().items()}

    return read


def default_lag_source(settings: Settings) -> Callable[[], dict[tuple[str, str, int], int]] | None:
    """Consumer lag of the speed layer's group, read from the configured brokers in the background."""
    from serving.lag import from_settings

    return from_settings(settings)


# ---------------------------------------------------------------- risk router


def load_risk_router(settings: Settings, services: Any) -> tuple[Any | None, str]:
    """The speed layer's synchronous decision router from ``serving.risk``; (None, reason) if absent."""
    try:
        from serving import risk
    except ImportError as exc:
        return None, f"serving.risk is not installed ({exc.name})"
    try:
        if hasattr(risk, "create_router"):
            router = risk.create_router(settings)
        else:
            router = risk.router
    except Exception as exc:  # noqa: BLE001 - the rest of the API keeps serving
        return None, f"{type(exc).__name__}"
    return router, ""


def default_loaders(sql: WarehouseSql | None) -> dict[str, Callable[..., Any]]:
    """Registry loaders for every model kind the API serves (see :mod:`serving.model_views`)."""
    from serving import model_views

    return model_views.loaders(sql)

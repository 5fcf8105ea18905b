"""Data behind the web dashboard (scope ``dashboard:read``) and the static dashboard itself (no data, no key).

``GET /v1/dashboard/data`` returns every panel's dataset in one response so the first render needs one round
trip; each panel that cannot be served (model not trained, warehouse down) carries an ``error`` instead of rows.

Fast at any warehouse size:
- the warehouse panels read only the rollups and two small dimensions through named queries of
  ``warehouse/queries.py`` (``dashboard_window``, ``sales_daily``, ``station_map``, ``member_density``, ...): no
  ``FINAL`` scan of a base fact is on this path;
- the assembled response is cached as JSON bytes, keyed by the rollups' last insert (the active parts of the
  rollup and dashboard dimension tables, from ``system.parts``) and the promoted model versions: a reload costs one
  small metadata query while nothing changed, and new data shows on the next load (at most ``MIN_FRESH_S`` late
  under a continuous stream of inserts);
- one computation at a time per view: concurrent first loads wait for the one in flight (single flight);
- model panels are computed on a second thread while the warehouse answers the rollup queries.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Query, Response

from serving.auth import Principal, Scope, require
from serving.deps import Services, ServicesDep, clean
from serving.ports import NotReady

router = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])
STATIC_DIR = Path(__file__).parent / "dashboard"

WAREHOUSE_PANELS = ("sales_by_station", "sales_by_product", "sales_by_hour", "sales_by_day", "risk_kpis",
                    "risk_daily", "points_flow", "stations_map", "member_density")
MODEL_PANELS = ("churn_segments", "forecast_vs_actual", "stock_alerts")
Panel = Literal["sales_by_station", "sales_by_product", "sales_by_hour", "sales_by_day", "risk_kpis", "risk_daily",
                "points_flow", "stations_map", "member_density", "churn_segments", "forecast_vs_actual",
                "stock_alerts"]
#: Tables whose parts make the cache key: every table a dashboard panel reads.
SOURCE_TABLES = ("rollup_sales_daily", "rollup_network_hourly", "rollup_risk_daily", "rollup_points_daily",
                 "dim_station", "dim_member", "fact_tank_readings", "fact_station_sales")
UTC_OFFSET_H = 8  # the network lives in UTC+8 (hour-of-day panel)
MIN_FRESH_S = 5.0  # a cached view younger than this is served even if rows arrived since (stream inserts)
MAX_AGE_S = 600.0  # and none older than this, whatever the key says (model panels, clock-relative alerts)
NO_KEY_TTL_S = 30.0  # when the key cannot be read (a warehouse without system.parts): plain time-based cache


# ---------------------------------------------------------------- warehouse panels (rollups only)


class WarehousePanels:
    """The warehouse panels of one view (window in days), from rollup named queries over a ``SqlPort``."""

    def __init__(self, sql: Any, days: int,
                 member_density: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.sql = sql
        self.days = days
        self.member_density = member_density or (lambda: self._named("member_density"))
        self.window = self._window()

    def _named(self, name: str, **params: Any) -> list[dict[str, Any]]:
        return self.sql.named(name, **params).to_dict("records")

    def _window(self) -> dict[str, Any]:
        rows = self._named("dashboard_window")
        r = rows[0] if rows else {}
        last = _as_date(r.get("last_date"))
        empty = last is None or not int(r.get("rollup_rows") or 0)
        end = last if last is not None else datetime.now(UTC).date()
        start = end - timedelta(days=max(self.days, 1) - 1)
        return {"date_from": start.isoformat(), "date_to": end.isoformat(), "days": self.days, "empty": empty,
                "first_date": None if empty else str(_as_date(r.get("first_date")))}

    @property
    def rng(self) -> dict[str, str]:
        return {"date_from": self.window["date_from"], "date_to": self.window["date_to"]}

    def compute(self) -> dict[str, dict[str, Any]]:
        """Every warehouse panel; each one timed and failing on its own."""
        out: dict[str, dict[str, Any]] = {}
        shared: dict[str, Any] = {}

        def sales_daily() -> pd.DataFrame:
            if "sales_daily" not in shared:
                shared["sales_daily"] = self.sql.named("sales_daily", **self.rng)
            return shared["sales_daily"]

        def by(key: str) -> list[dict[str, Any]]:
            df = sales_daily()
            if df.empty:
                return []
            cols = [c for c in ("captured", "litres", "gross_fen", "refund_fen", "net_fen") if c in df]
            return df.groupby(key, as_index=False)[cols].sum().sort_values(key).to_dict("records")

        def stations_map() -> list[dict[str, Any]]:
            if "stations" not in shared:
                shared["stations"] = self._named("station_map", **self.rng)
            return shared["stations"]

        def sales_by_station() -> list[dict[str, Any]]:
            # the top 15 of the station map's sales (what ``top_stations`` returns, without a second scan)
            sold = [r for r in stations_map() if float(r.get("captured") or 0) > 0]
            sold.sort(key=lambda r: (-(r.get("net_fen") or 0), r["station_id"]))
            return [{k: r.get(k) for k in ("station_id", "captured", "litres", "net_fen", "fraud")}
                    for r in sold[:15]]

        def sales_by_hour() -> list[dict[str, Any]]:
            rows = self._named("sales_by_hour_of_day", **self.rng)
            for r in rows:
                r["hour_local"] = (int(r["hour_utc"]) + UTC_OFFSET_H) % 24
            return sorted(rows, key=lambda r: r["hour_local"])

        def risk_kpis() -> list[dict[str, Any]]:
            df = self.sql.named("risk_decisions_by_outcome", **self.rng)
            if df.empty:
                return []
            return df.groupby("outcome", as_index=False)[["decisions", "degraded"]].sum().to_dict("records")

        jobs: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "sales_by_day": lambda: by("date"),
            "sales_by_product": lambda: by("product"),
            "sales_by_hour": sales_by_hour,
            "sales_by_station": sales_by_station,
            "risk_kpis": risk_kpis,
            "risk_daily": lambda: self._named("risk_kpis_daily", **self.rng),
            "points_flow": lambda: self._named("points_daily", **self.rng),
            "stations_map": stations_map,
            "member_density": self.member_density,
        }
        for name, job in jobs.items():
            out[name] = _timed(job)
        return out

    def station_daily_litres(self, station_id: str, days: int = 60) -> list[dict[str, Any]]:
        end = date.fromisoformat(self.window["date_to"])
        return self._named("station_daily_litres", station_id=station_id,
                           date_from=(end - timedelta(days=days - 1)).isoformat(), date_to=end.isoformat())


def _as_date(v: Any) -> date | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        ts = pd.Timestamp(v)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts) or ts.year <= 1970:
        return None
    return ts.date()


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity (a ratio over zero decisions): such values travel as null."""
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            row[k] = None
    return row


def _timed(job: Callable[[], list[dict[str, Any]]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        out: dict[str, Any] = {"rows": [_finite(clean(r)) for r in job()]}
    except NotReady as exc:
        out = {"rows": [], "error": exc.detail}
    out["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return out


# ---------------------------------------------------------------- model panels


def _model_panel(services: Services, name: str, params: dict[str, Any],
                 actuals: Callable[[str], list[dict[str, Any]]] | None) -> dict[str, Any]:
    def job() -> list[dict[str, Any]]:
        if name == "churn_segments":
            return services.hub.get("churn").obj.segments()
        if name == "stock_alerts":
            from serving.routes_analytics import stock_alert_rows

            rows, _, source = stock_alert_rows(services, station_id=params.get("station_id"), offset=0, limit=50)
            return [{**r, "source": source} for r in rows]
        return _forecast_vs_actual(services, params, actuals)

    return _timed(job)


def _forecast_vs_actual(services: Services, params: dict[str, Any],
                        actuals: Callable[[str], list[dict[str, Any]]] | None) -> list[dict[str, Any]]:
    """Actual daily litres (sales rollup) followed by the promoted demand model's forecast and 80% interval,
    for one station × product (default: the first forecast station, product 92)."""
    demand = services.hub.get("demand").obj
    station = params.get("station_id") or demand.default_station()
    if station is None:
        return []
    fc = demand.forecast(station_id=station, product=None, days=30)
    products = [str(r.get("product")) for r in fc if r.get("product") is not None]
    product = params.get("product") or ("92" if "92" in products else (products[0] if products else None))
    fc = [r for r in fc if product is None or str(r.get("product")) == product]
    by_date: dict[str, dict[str, Any]] = {}
    for r in demand.backtest(station_id=station, product=product):
        by_date[str(r["date"])[:10]] = {"forecast": r.get("forecast"), "lower": r.get("lower"),
                                        "upper": r.get("upper")}
    if actuals is not None:
        try:
            for r in actuals(station):
                if product is None or str(r["product"]) == product:
                    by_date.setdefault(str(r["date"])[:10], {})["actual"] = r["litres"]
        except NotReady:
            pass
    for r in fc:
        by_date.setdefault(str(r["date"])[:10], {}).update(
            {"forecast": r.get("forecast"), "lower": r.get("lower"), "upper": r.get("upper")})
    rows = []
    for day in sorted(by_date):
        v = by_date[day]
        rows.append({"date": day, "station_id": station, "product": product, "actual": v.get("actual"),
                     "forecast": v.get("forecast"), "lower": v.get("lower"), "upper": v.get("upper")})
    return rows


# ---------------------------------------------------------------- one view: all panels


def _legacy_panel(services: Services, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A warehouse panel through the analytics port (apps built without a SQL port, e.g. with a stand-in)."""
    return _timed(lambda: services.need_analytics().dashboard(name, params))


def _member_density(services: Services, key: tuple[Any, ...] | None) -> list[dict[str, Any]]:
    """The member-density grid, shared by every view while ``dim_member`` is unchanged (it does not depend on the
    window, and a dimension of millions of members should not be scanned once per window)."""
    parts = None if key is None else tuple(t for t in key[0] if t[0] == "dim_member")
    cached = getattr(services, "_dashboard_density", None)
    if parts is not None and cached is not None and cached[0] == parts:
        return cached[1]
    if services.sql is None:
        return []
    rows = services.sql.named("member_density").to_dict("records")
    if parts is not None:
        services._dashboard_density = (parts, rows)  # type: ignore[attr-defined]
    return rows


def compute_view(services: Services, *, days: int = 30, station_id: str | None = None,
                 key: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """Every panel of one view (no cache of the view; ``key``: the cache key taken before, which lets the member
    density be reused). Warehouse and model panels are computed on two threads."""
    started = time.perf_counter()
    params = {"days": days, "station_id": station_id}
    wp: WarehousePanels | None = None
    window: dict[str, Any] | None = None
    warehouse_error: str | None = None
    if services.sql is not None:
        try:
            wp = WarehousePanels(services.sql, days, member_density=lambda: _member_density(services, key))
            window = wp.window
        except NotReady as exc:
            warehouse_error = exc.detail
    elif services.analytics is None:
        warehouse_error = "warehouse not available: " + (services.warehouse_error or "not configured")

    def actuals(station: str) -> list[dict[str, Any]]:
        if wp is not None:
            return wp.station_daily_litres(station)
        if services.analytics is not None:
            return services.analytics.dashboard("actual_daily", {"station_id": station, "days": 60})
        return []

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-models") as pool:
        futures = {name: pool.submit(_model_panel, services, name, params, actuals) for name in MODEL_PANELS}
        if wp is not None:
            panels = wp.compute()
        elif warehouse_error is not None:
            panels = {name: {"rows": [], "error": warehouse_error, "ms": 0.0} for name in WAREHOUSE_PANELS}
        else:
            panels = {name: _legacy_panel(services, name, params) for name in WAREHOUSE_PANELS}
        for name, fut in futures.items():
            panels[name] = fut.result()
    return {"panels": {name: panels[name] for name in WAREHOUSE_PANELS + MODEL_PANELS}, "window": window,
            "compute_ms": round((time.perf_counter() - started) * 1000, 1)}


def _cache_key_part(services: Services) -> tuple[Any, ...] | None:
    """What the cached view depends on: the rollups' and dashboard dimensions' active parts (every insert adds one)
    and the promoted model versions. None when the warehouse cannot say (then a plain TTL applies)."""
    models = tuple(_current_version(services, kind) for kind in ("churn", "demand"))
    if services.sql is None:
        return None
    try:
        rows = services.sql.query(
            "SELECT table, count() AS parts, sum(rows) AS rows, max(modification_time) AS changed "
            "FROM system.parts WHERE active AND database = currentDatabase() "
            "AND has(splitByChar(',', {tables:String}), table) GROUP BY table ORDER BY table",
            {"tables": ",".join(SOURCE_TABLES)})
    except NotReady:
        return None
    return (tuple((r["table"], int(r["parts"]), int(r["rows"]), str(r["changed"])) for r in rows), models)


def _current_version(services: Services, kind: str) -> str | None:
    try:
        return services.registry.current_version(kind)
    except Exception:  # noqa: BLE001 - a registry that cannot be read: the model panel says so itself
        return None


class _Entry:
    __slots__ = ("at", "body", "key", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = -math.inf
        self.key: Any = None
        self.body = b""


_views_lock = threading.Lock()


def _entry(services: Services, days: int, station_id: str | None) -> _Entry:
    """The cache slot of one view, kept on the app's services object (its lifetime is the app's)."""
    with _views_lock:
        views: dict[tuple[int, str | None], _Entry] | None = getattr(services, "_dashboard_views", None)
        if views is None:
            views = {}
            services._dashboard_views = views  # type: ignore[attr-defined]
        entry = views.get((days, station_id))
        if entry is None:
            if len(views) > 256:
                views.clear()
            entry = views[(days, station_id)] = _Entry()
        return entry


def dashboard_bytes(services: Services, *, days: int = 30, station_id: str | None = None,
                    force: bool = False) -> tuple[bytes, float]:
    """The view as JSON bytes and its age in seconds: cached per app and (window, station), recomputed when the
    rollups or the promoted models changed (single flight: concurrent callers wait for one computation)."""
    entry = _entry(services, days, station_id)
    with entry.lock:
        now = time.monotonic()
        age = now - entry.at
        if not force and entry.body and age < MIN_FRESH_S:
            return entry.body, age
        # taken before computing: rows that arrive meanwhile change the key again, so the next load sees them
        key = _cache_key_part(services)
        if not force and entry.body and age < (MAX_AGE_S if key is not None else NO_KEY_TTL_S) and key == entry.key:
            return entry.body, age
        body = compute_view(services, days=days, station_id=station_id, key=key)
        entry.body = json.dumps(body, separators=(",", ":"), default=_json_default, allow_nan=False).encode()
        entry.key, entry.at = key, time.monotonic()
        return entry.body, 0.0


def _json_default(v: Any) -> Any:
    if isinstance(v, (datetime, date, pd.Timestamp)):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def dashboard_data(services: Services, *, days: int = 30, station_id: str | None = None,
                   max_age_s: float | None = None) -> dict:
    """All panels as a dict (``max_age_s=0`` forces a recomputation)."""
    body, age = dashboard_bytes(services, days=days, station_id=station_id, force=max_age_s == 0)
    return {**json.loads(body), "cached_s": round(age, 1)}


def warm(services: Services) -> None:
    """Fill the default dashboard view in the background (called at startup)."""
    threading.Thread(target=lambda: _safe_warm(services), name="dashboard-warm", daemon=True).start()


def _safe_warm(services: Services) -> None:
    try:
        dashboard_bytes(services)
    except Exception:  # noqa: BLE001,S110 - warming is an optimisation; a failure shows on first request
        pass


Station = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Days = Annotated[int, Query(ge=1, le=3660, description="Window: the last N days present in the warehouse")]


@router.get("/data", summary="Every dashboard panel's data in one response",
            responses={200: {"content": {"application/json": {"example": {
                "panels": {"sales_by_day": {"rows": [{"date": "2026-03-01", "net_fen": 123456}], "ms": 3.1},
                           "churn_segments": {"rows": [], "error": "model not trained", "ms": 0.2}},
                "window": {"date_from": "2026-02-01", "date_to": "2026-03-02", "days": 30, "empty": False},
                "compute_ms": 41.0, "cached_s": 2.5}}}}})
def data(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DASHBOARD_READ))],
         days: Days = 30, station_id: Station = None) -> Response:
    """Sales by station/product/hour, risk KPIs and review rate, points issued/redeemed, churn segments, forecast
    vs actual with intervals, stock alerts, stations and member density. Cached until the rollups or the promoted
    models change (``cached_s``: age of the view)."""
    body, age = dashboard_bytes(services, days=days, station_id=station_id)
    return Response(b'{"cached_s":' + str(round(age, 1)).encode() + b"," + body[1:], media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@router.get("/panels/{name}", summary="One dashboard panel's data")
def panel(name: Panel, services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DASHBOARD_READ))],
          days: Days = 30, station_id: Station = None) -> dict:
    """One panel of the cached view (same data as in ``/v1/dashboard/data``)."""
    body, _age = dashboard_bytes(services, days=days, station_id=station_id)
    return json.loads(body)["panels"][name]

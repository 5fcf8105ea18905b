"""Data behind the web dashboard (scope ``dashboard:read``) and the static dashboard itself (no data, no key).

``GET /v1/dashboard/data`` returns every panel's dataset in one response so the first render needs one round
trip; each panel that cannot be served (model not trained, warehouse down) carries an ``error`` instead of rows.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

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


def _panel(services: Services, name: str, params: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        if name in WAREHOUSE_PANELS:
            rows = services.need_analytics().dashboard(name, params)
        elif name == "churn_segments":
            rows = services.hub.get("churn").obj.segments()
        elif name == "stock_alerts":
            from serving.routes_analytics import stock_alert_rows

            rows, _, source = stock_alert_rows(services, station_id=params.get("station_id"), offset=0, limit=50)
            rows = [{**r, "source": source} for r in rows]
        else:  # forecast_vs_actual
            rows = _forecast_vs_actual(services, params)
        out: dict[str, Any] = {"rows": [clean(r) for r in rows]}
    except NotReady as exc:
        out = {"rows": [], "error": exc.detail}
    out["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return out


def _forecast_vs_actual(services: Services, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Actual daily litres (warehouse) followed by the promoted demand model's forecast and 80% interval,
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
    if services.analytics is not None:
        try:
            for r in services.analytics.dashboard("actual_daily", {"station_id": station, "days": 60}):
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


Station = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Days = Annotated[int, Query(ge=1, le=3660, description="Window: the last N days present in the warehouse")]


CACHE_TTL_S = 30.0
_cache: dict[tuple[int, int, str | None], tuple[float, dict]] = {}
_cache_lock = threading.Lock()


def dashboard_data(services: Services, *, days: int = 30, station_id: str | None = None,
                   max_age_s: float = CACHE_TTL_S) -> dict:
    """All panels, cached for ``max_age_s`` per (app, window, station): a dashboard refresh, however many
    browsers show it, costs the warehouse one set of rollup queries per half minute."""
    key = (id(services), days, station_id)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < max_age_s:
        return {**hit[1], "cached_s": round(now - hit[0], 1)}
    params = {"days": days, "station_id": station_id}
    body = {"panels": {name: _panel(services, name, params) for name in WAREHOUSE_PANELS + MODEL_PANELS}}
    with _cache_lock:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = (time.monotonic(), body)
    return {**body, "cached_s": 0.0}


def warm(services: Services) -> None:
    """Fill the default dashboard view in the background (called at startup)."""
    threading.Thread(target=lambda: _safe_warm(services), name="dashboard-warm", daemon=True).start()


def _safe_warm(services: Services) -> None:
    try:
        dashboard_data(services, max_age_s=0.0)
    except Exception:  # noqa: BLE001,S110 - warming is an optimisation; a failure shows on first request
        pass


@router.get("/data", summary="Every dashboard panel's data in one response")
def data(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DASHBOARD_READ))],
         days: Days = 30, station_id: Station = None) -> dict:
    """Sales by station/product/hour, risk KPIs and review rate, points issued/redeemed, churn segments, forecast
    vs actual with intervals, stock alerts, stations and member density (cached for 30 s)."""
    return dashboard_data(services, days=days, station_id=station_id)


@router.get("/panels/{name}", summary="One dashboard panel's data")
def panel(name: Panel, services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DASHBOARD_READ))],
          days: Days = 30, station_id: Station = None) -> dict:
    return _panel(services, name, {"days": days, "station_id": station_id})

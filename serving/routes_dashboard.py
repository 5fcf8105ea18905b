"""Data behind the web dashboard (scope ``dashboard:read``) and the static dashboard itself (no data, no key).

``GET /v1/dashboard/data`` returns every panel's dataset in one response so the first render needs one round
trip; each panel that cannot be served (model not trained, warehouse down) carries an ``error`` instead of rows.
"""

from __future__ import annotations

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
            rows, _ = services.hub.get("demand").obj.alerts(station_id=params.get("station_id"), offset=0, limit=50)
        else:  # forecast_vs_actual
            rows = _forecast_vs_actual(services, params)
        out: dict[str, Any] = {"rows": [clean(r) for r in rows]}
    except NotReady as exc:
        out = {"rows": [], "error": exc.detail}
    out["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return out


def _forecast_vs_actual(services: Services, params: dict[str, Any]) -> list[dict[str, Any]]:
    demand = services.hub.get("demand").obj
    station = params.get("station_id")
    rows = demand.history_and_forecast(station_id=station, product=params.get("product"))
    return rows


Station = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Days = Annotated[int, Query(ge=1, le=3660, description="Window: the last N days present in the warehouse")]


@router.get("/data", summary="Every dashboard panel's data in one response")
def data(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DASHBOARD_READ))],
         days: Days = 30, station_id: Station = None) -> dict:
    """Sales by station/product/hour, risk KPIs and review rate, points issued/redeemed, churn segments, forecast
    vs actual with intervals, stock alerts, stations and member density."""
    params = {"days": days, "station_id": station_id}
    return {"panels": {name: _panel(services, name, params) for name in WAREHOUSE_PANELS + MODEL_PANELS}}


@router.get("/panels/{name}", summary="One dashboard panel's data")
def panel(name: Panel, services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DASHBOARD_READ))],
          days: Days = 30, station_id: Station = None) -> dict:
    return _panel(services, name, {"days": days, "station_id": station_id})

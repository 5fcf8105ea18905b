"""Model outputs for analysts and operations: pricing, demand forecasts, replenishment, stock alerts, sites.

Each reads the promoted model of its kind from the registry (503 "model not trained" when there is none) and
never returns personal data.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from serving.auth import Principal, Scope, require
from serving.deps import Services, ServicesDep, clean
from serving.ports import NotReady
from serving.schemas import Page, StationId

router = APIRouter(prefix="/v1", tags=["analytics"])
NOT_TRAINED = {503: {"description": "model not trained"}}
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]
OptStation = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Product = Annotated[str | None, Query(pattern=r"^(92|95|98|diesel)$", description="92, 95, 98 or diesel")]
Region = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 _.:-]+$")]


@router.get("/pricing/recommendations", response_model=Page, tags=["pricing"], responses=NOT_TRAINED,
            summary="Price / discount recommendations per station and product")
def pricing(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.PRICING_READ))],
            station_id: OptStation = None, region: Region = None, product: Product = None,
            offset: Offset = 0, limit: Limit = 100) -> Page:
    """Recommended price (fen), change vs current, expected volume and gross-profit effect, and the constraint
    that bound it (maximum daily change, floor/ceiling, near-monopoly caution)."""
    loaded = services.hub.get("pricing")
    rows, total = loaded.obj.recommendations(station_id=station_id, region=region, product=product,
                                             offset=offset, limit=limit)
    return Page(total=total, offset=offset, limit=limit,
                items=[{**clean(r), "model_version": loaded.version} for r in rows])


@router.get("/demand/forecast", tags=["demand"], responses={**NOT_TRAINED, 404: {"description": "unknown station"}},
            summary="Daily demand forecast with 80% interval for a station")
def forecast(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DEMAND_READ))],
             station_id: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")],
             product: Product = None, days: Annotated[int, Query(ge=1, le=30)] = 30) -> dict:
    """Litres per day for the next ``days`` days (``forecast``, ``lower``, ``upper``) per product."""
    loaded = services.hub.get("demand")
    rows = loaded.obj.forecast(station_id=station_id, product=product, days=days)
    if not rows:
        raise HTTPException(404, "no forecast for this station/product")
    return {"station_id": station_id, "model_version": loaded.version, "items": [clean(r) for r in rows]}


@router.get("/demand/replenishment", response_model=Page, tags=["demand"], responses=NOT_TRAINED,
            summary="Replenishment plan per tank")
def replenishment(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.DEMAND_READ))],
                  station_id: OptStation = None, offset: Offset = 0, limit: Limit = 100) -> Page:
    """When to order and how much, from capacity, lead time and safety stock taken from the forecast interval."""
    loaded = services.hub.get("demand")
    rows, total = loaded.obj.replenishment(station_id=station_id, offset=offset, limit=limit)
    return Page(total=total, offset=offset, limit=limit,
                items=[{**clean(r), "model_version": loaded.version} for r in rows])


def stock_alert_rows(services: Services, *, station_id: str | None, offset: int, limit: int,
                     days: int = 14) -> tuple[list[dict], int, str]:
    """Alerts from the promoted demand model when it carries them, else from the warehouse's tank readings
    (measured closing level below book stock by more than the tolerance: a leak or a loss)."""
    try:
        loaded = services.hub.get("demand")
        if getattr(loaded.obj, "has_alerts", False):
            rows, total = loaded.obj.alerts(station_id=station_id, offset=offset, limit=limit)
            return rows, total, f"demand model {loaded.version}"
    except NotReady:
        pass
    rows = services.need_analytics().dashboard("tank_alerts", {"days": days, "limit": 1000})
    if station_id is not None:
        rows = [r for r in rows if str(r.get("station_id")) == station_id]
    return rows[offset:offset + limit], len(rows), f"warehouse tank readings, last {days} days"


@router.get("/alerts/stock", response_model=Page, tags=["alerts"], responses=NOT_TRAINED,
            summary="Stock and leak alerts (sales and tank readings disagree)")
def stock_alerts(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.ALERTS_READ))],
                 station_id: OptStation = None, offset: Offset = 0, limit: Limit = 100,
                 days: Annotated[int, Query(ge=1, le=366)] = 14) -> Page:
    """Tanks whose measured level drifts from book stock (possible leak or loss) or falls below safety stock.
    Each item says where it comes from (``source``)."""
    rows, total, source = stock_alert_rows(services, station_id=station_id, offset=offset, limit=limit, days=days)
    return Page(total=total, offset=offset, limit=limit, items=[{**clean(r), "source": source} for r in rows])


@router.get("/sites/recommendations", tags=["sites"], responses=NOT_TRAINED,
            summary="Top-k candidate sites for new stations")
def site_recommendations(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.SITES_READ))],
                         k: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
    """Candidate sites scored by unserved demand (refuelling gaps) under land-cost and access constraints."""
    loaded = services.hub.get("sites")
    return {"model_version": loaded.version, "items": [clean(r) for r in loaded.obj.recommendations(k=k)]}


@router.get("/sites/stations/{station_id}", tags=["sites"],
            responses={**NOT_TRAINED, 404: {"description": "unknown station"}},
            summary="Nozzle count and product mix suggestion for an existing station")
def station_mix(station_id: Annotated[StationId, Path()], services: ServicesDep,
                _: Annotated[Principal, Depends(require(Scope.SITES_READ))]) -> dict:
    """Suggested nozzles per product from the vehicles the station serves and competitor coverage."""
    loaded = services.hub.get("sites")
    row = loaded.obj.station(station_id)
    if row is None:
        raise HTTPException(404, "unknown station")
    return {**clean(row), "model_version": loaded.version}

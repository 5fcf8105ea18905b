"""Points balance and history of a member (scope ``points:read``; reads are audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from serving.auth import Principal, Scope, require
from serving.deps import ServicesDep, audit_read, clean
from serving.schemas import MemberId, Page, PointsBalance

router = APIRouter(prefix="/v1/points", tags=["points"])
Reader = Annotated[Principal, Depends(require(Scope.POINTS_READ))]


@router.get("/{member_id}/balance", response_model=PointsBalance, summary="Points balance of a member",
            responses={404: {"description": "unknown member"}, 503: {"description": "warehouse not available"}})
def balance(member_id: Annotated[MemberId, Path()], request: Request, services: ServicesDep,
            principal: Reader) -> PointsBalance:
    """Balance from the points ledger in the warehouse (issued − redeemed − expired − reversed)."""
    row = services.need_analytics().points_balance(member_id)
    audit_read(request, services, principal, action="points.balance", subjects=[member_id], fields=["points"],
               unmasked=False, purpose=request.headers.get("x-purpose"))
    return PointsBalance(**clean(row))


@router.get("/{member_id}/history", response_model=Page, summary="Points movements of a member, newest first",
            responses={404: {"description": "unknown member"}, 503: {"description": "warehouse not available"}})
def history(member_id: Annotated[MemberId, Path()], request: Request, services: ServicesDep, principal: Reader,
            limit: Annotated[int, Query(ge=1, le=500)] = 50,
            offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Page:
    """Accruals, redemptions, reversals and expiries with their transaction ids."""
    rows = services.need_analytics().points_history(member_id, limit=limit + 1, offset=offset)
    audit_read(request, services, principal, action="points.history", subjects=[member_id],
               fields=["points_movements"], unmasked=False, purpose=request.headers.get("x-purpose"))
    items = [clean(r) for r in rows[:limit]]
    return Page(total=offset + len(rows), offset=offset, limit=limit, items=items)

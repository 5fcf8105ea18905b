"""Shared request dependencies: the services object, audit helper, paging and masking parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request

from fuelcard.settings import Settings
from models.registry import Registry
from serving.auth import KeyRing, Principal, Scope
from serving.hub import ModelHub
from serving.metrics import Metrics
from serving.ports import AnalyticsSource, AuditStore, NotReady, ReviewStore, SqlPort


@dataclass
class Services:
    """Everything a route may use; built once by :func:`serving.app.create_app`."""

    settings: Settings
    keyring: KeyRing
    audit: AuditStore
    registry: Registry
    hub: ModelHub
    metrics: Metrics
    sql: SqlPort | None = None
    analytics: AnalyticsSource | None = None
    reviews: ReviewStore | None = None
    demo_keys: dict[str, str] = field(default_factory=dict)
    warehouse_error: str | None = None

    def need_analytics(self) -> AnalyticsSource:
        if self.analytics is None:
            raise NotReady("warehouse", "warehouse not available: " + (self.warehouse_error or "not configured"))
        return self.analytics

    def need_reviews(self) -> ReviewStore:
        if self.reviews is None:
            raise NotReady("warehouse", "review queue not available: " + (self.warehouse_error or "no warehouse"))
        return self.reviews


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool (a thread hop per request for a lookup).
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

PurposeHeader = Annotated[str | None, Header(
    alias="X-Purpose", max_length=200, description="Why personal data is being read (recorded in the audit trail)")]
RevealQuery = Annotated[bool, Query(description="Return personal data unmasked (needs the pii:read scope and an "
                                                "X-Purpose header; recorded in the audit trail)")]


def audit_read(request: Request, services: Services, principal: Principal, *, action: str, subjects: list[str],
               fields: list[str], unmasked: bool, purpose: str | None) -> None:
    """Record one personal-data read in the audit trail."""
    from serving.audit import audit_event

    services.audit.record(audit_event(
        request_id=getattr(request.state, "request_id", ""), key_id=principal.key_id, group=principal.group,
        action=action, subjects=subjects, fields=fields, unmasked=unmasked,
        purpose=purpose or f"default:{principal.group}"))


def may_reveal(principal: Principal, reveal: bool, purpose: str | None) -> bool:
    """True when unmasked personal data is asked for and allowed (raises 403/400 otherwise)."""
    from fastapi import HTTPException

    if not reveal:
        return False
    if not principal.has(Scope.PII_READ):
        raise HTTPException(403, "unmasked personal data needs the pii:read scope")
    if not purpose or not purpose.strip():
        raise HTTPException(400, "unmasked personal data needs an X-Purpose header saying why")
    return True


def clean(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly values (numpy scalars, timestamps, NaN → None)."""
    out = {}
    for k, v in row.items():
        if hasattr(v, "item") and not isinstance(v, str | bytes):
            try:
                v = v.item()
            except (ValueError, AttributeError):
                v = str(v)
        if isinstance(v, float) and v != v:  # NaN
            v = None
        elif hasattr(v, "isoformat"):
            v = v.isoformat()
        out[k] = v
    return out

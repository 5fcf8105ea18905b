"""The manual-review queue: list, claim, resolve. Each resolution is stored as a training label.

Cases are the review-level decisions of the risk scorer. Card holder contact details are masked unless the key
holds ``pii:read`` and asks with ``reveal=true`` and an ``X-Purpose`` (e.g. "call cardholder to verify").
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from serving.auth import Principal, Scope, require
from serving.deps import PurposeHeader, RevealQuery, ServicesDep, audit_read, clean, may_reveal
from serving.redact import reveal as reveal_contact
from serving.schemas import Page, ResolveBody

router = APIRouter(prefix="/v1/review", tags=["review"])
Reader = Annotated[Principal, Depends(require(Scope.REVIEW_READ))]
Writer = Annotated[Principal, Depends(require(Scope.REVIEW_WRITE))]
TxId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["T00001234"])]
ERRORS = {404: {"description": "unknown case"}, 409: {"description": "claimed by someone else / not claimed"},
          503: {"description": "warehouse not available"}}


@router.get("/cases", response_model=Page, summary="Review cases, oldest open first", responses=ERRORS)
def list_cases(services: ServicesDep, principal: Reader,
               status: Annotated[Literal["open", "claimed", "resolved"] | None, Query()] = "open",
               offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
               limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Page:
    """Cases with score, reason codes and status; no personal data."""
    rows, total = services.need_reviews().list_cases(status=status, limit=limit, offset=offset)
    return Page(total=total, offset=offset, limit=limit, items=[clean(r) for r in rows])


@router.get("/cases/{tx_id}", summary="One case with the card holder's (masked) contact details", responses=ERRORS)
def get_case(tx_id: TxId, request: Request, services: ServicesDep, principal: Reader,
             purpose: PurposeHeader = None, reveal: RevealQuery = False) -> dict:
    """The decision, its reasons and features, and the member's contact (masked unless revealed)."""
    unmasked = may_reveal(principal, reveal, purpose)
    case = clean(services.need_reviews().get_case(tx_id))
    member_id = case.get("member_id")
    if member_id and services.analytics is not None:
        if not unmasked and hasattr(services.analytics, "masked_contacts"):
            masked = services.analytics.masked_contacts([str(member_id)]).get(str(member_id))
            if masked:
                case["contact"] = {**masked, "masked": True}
        else:
            raw = services.analytics.member_contact([str(member_id)]).get(str(member_id))
            if raw:
                case["contact"] = {**reveal_contact(raw, unmasked=unmasked,
                                                    sm4_key_hex=services.settings.sm4_key.get_secret_value()),
                                   "masked": not unmasked}
    audit_read(request, services, principal, action="review.case", subjects=[tx_id] + ([str(member_id)] if member_id
               else []), fields=["decision", "phone", "id_number"], unmasked=unmasked, purpose=purpose)
    return case


@router.post("/cases/{tx_id}/claim", summary="Claim a case", responses=ERRORS)
def claim(tx_id: TxId, services: ServicesDep, principal: Writer) -> dict:
    """Assign the case to the caller's key; a case claimed by another key answers 409."""
    return clean(services.need_reviews().claim(tx_id, reviewer=principal.key_id))


@router.post("/cases/{tx_id}/resolve", summary="Resolve a claimed case; stored as a fraud label", responses=ERRORS)
def resolve(tx_id: TxId, body: ResolveBody, services: ServicesDep, principal: Writer) -> dict:
    """Record ``fraud`` or ``legit``; the label table feeds the next fraud-model training (with its delay)."""
    return clean(services.need_reviews().resolve(tx_id, reviewer=principal.key_id, label=body.label, note=body.note))

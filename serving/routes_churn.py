"""Churn score per member and churn segments, paged and exportable (CSV/Parquet) for marketing.

Scores come from the promoted ``churn`` model in the registry. Member contact details are masked unless the
key holds ``pii:read`` and asks with ``reveal=true`` and an ``X-Purpose``; every member-level read is audited.
"""

from __future__ import annotations

import io
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response

from serving.auth import Principal, Scope, require
from serving.deps import PurposeHeader, RevealQuery, Services, ServicesDep, audit_read, clean, may_reveal
from serving.redact import reveal as reveal_contact
from serving.schemas import ChurnScore, Contact, MemberId, Page
from serving.views import ChurnView

router = APIRouter(prefix="/v1/churn", tags=["churn"])
Reader = Annotated[Principal, Depends(require(Scope.CHURN_READ))]
Exporter = Annotated[Principal, Depends(require(Scope.SEGMENTS_EXPORT))]
Segment = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9 _./:+-]*$",
                                      description="Segment name (see /v1/churn/segments)")]


def _view(services: Services) -> tuple[ChurnView, str]:
    loaded = services.hub.get("churn")
    return loaded.obj, loaded.version


def _contacts(services: Services, member_ids: list[str], unmasked: bool) -> dict[str, dict]:
    if services.analytics is None or not member_ids:
        return {}
    if not unmasked and hasattr(services.analytics, "masked_contacts"):
        return services.analytics.masked_contacts(member_ids)
    raw = services.analytics.member_contact(member_ids)
    key = services.settings.sm4_key.get_secret_value()
    return {m: reveal_contact(c, unmasked=unmasked, sm4_key_hex=key) for m, c in raw.items()}


@router.get("/members/{member_id}", response_model=ChurnScore, summary="Churn probability of one member",
            responses={404: {"description": "member not scored"}, 503: {"description": "model not trained"}})
def member_score(member_id: Annotated[MemberId, Path()], request: Request, services: ServicesDep,
                 principal: Reader, purpose: PurposeHeader = None, reveal: RevealQuery = False) -> ChurnScore:
    """P(churn within the model's horizon), the member's segment, its retention action and the main drivers."""
    unmasked = may_reveal(principal, reveal, purpose)
    view, version = _view(services)
    row = view.score(member_id)
    if row is None:
        raise HTTPException(404, "member not scored by the current churn model")
    contact = _contacts(services, [member_id], unmasked).get(member_id)
    audit_read(request, services, principal, action="churn.member", subjects=[member_id],
               fields=["churn_probability", "phone", "id_number"] if contact else ["churn_probability"],
               unmasked=unmasked, purpose=purpose)
    return ChurnScore(**clean(row), model_version=version,
                      contact=Contact(**contact, masked=not unmasked) if contact else None)


@router.get("/segments", summary="Churn segments (value tier × risk) with their retention action",
            responses={503: {"description": "model not trained"}})
def segments(services: ServicesDep, principal: Reader) -> dict:
    """Members, mean churn probability and the graded retention action per segment (no personal data)."""
    view, version = _view(services)
    return {"model_version": version, "segments": [clean(r) for r in view.segments()]}


@router.get("/segments/members", response_model=Page, summary="Members of a churn segment, highest risk first",
            responses={503: {"description": "model not trained"}})
def segment_members(request: Request, services: ServicesDep, principal: Reader, segment: Segment = None,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    purpose: PurposeHeader = None, reveal: RevealQuery = False) -> Page:
    """A page of members with probability, segment, action and masked contact details."""
    unmasked = may_reveal(principal, reveal, purpose)
    view, _ = _view(services)
    rows, total = view.members(segment=segment, offset=offset, limit=limit)
    items = [clean(r) for r in rows]
    ids = [str(r["member_id"]) for r in items]
    contacts = _contacts(services, ids, unmasked)
    for item in items:
        c = contacts.get(str(item["member_id"]))
        if c:
            item.update(c)
    audit_read(request, services, principal, action="churn.segment_members", subjects=ids,
               fields=["churn_probability", "phone"] if contacts else ["churn_probability"], unmasked=unmasked,
               purpose=purpose)
    return Page(total=total, offset=offset, limit=limit, items=items)


@router.get("/segments/export", summary="Export a segment for a retention campaign (CSV or Parquet)",
            response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}},
                       503: {"description": "model not trained"}})
def export(request: Request, services: ServicesDep, principal: Exporter, segment: Segment = None,
           format: Annotated[Literal["csv", "parquet"], Query()] = "csv",  # noqa: A002 - public query name
           purpose: PurposeHeader = None, reveal: RevealQuery = False) -> Response:
    """Every member of the segment: id, probability, segment, action, masked phone (one row per member)."""
    unmasked = may_reveal(principal, reveal, purpose)
    view, version = _view(services)
    frame = view.frame(segment=segment).copy()
    ids = [str(m) for m in frame["member_id"]] if "member_id" in frame else []
    contacts = _contacts(services, ids, unmasked)
    if contacts:
        frame["phone"] = [contacts.get(m, {}).get("phone") for m in ids]
    audit_read(request, services, principal, action=f"churn.export.{format}", subjects=ids[:200] +
               ([f"+{len(ids) - 200} more"] if len(ids) > 200 else []),
               fields=["churn_probability", "phone"] if contacts else ["churn_probability"],
               unmasked=unmasked, purpose=purpose)
    name = f"churn_{(segment or 'all').replace('/', '-').replace(' ', '_')}_{version}"
    if format == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return Response(buf.getvalue(), media_type="application/vnd.apache.parquet",
                        headers={"Content-Disposition": f'attachment; filename="{name}.parquet"'})
    return Response(frame.to_csv(index=False), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})

"""Health, readiness, Prometheus metrics, the audit trail and API key administration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.auth import GROUP_SCOPES, Principal, Scope, require
from serving.deps import ServicesDep
from serving.schemas import Health, KeyCreate, KeyCreated, Readiness

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, summary="Readiness: warehouse and models",
            responses={503: {"description": "the warehouse is not reachable", "model": Readiness}})
def ready(services: ServicesDep, request: Request) -> JSONResponse:
    """Ready when the warehouse answers; model kinds without a promoted version are listed, not fatal
    (their endpoints answer 503 until a model is trained)."""
    ok = False
    detail = services.warehouse_error or "not configured"
    if services.analytics is not None:
        try:
            ok = services.analytics.ping()
            detail = "ok" if ok else "no answer"
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
            detail = type(exc).__name__
    models = {k: {"promoted": v["promoted"], "loaded": v["loaded"], "servable": v["servable"]}
              for k, v in services.hub.status().items()}
    risk = getattr(request.app.state, "risk_service", None)
    risk_status = "not mounted"
    if risk is not None:
        st = risk.status()
        risk_status = "stream connected" if st.get("connected") else "degraded (rules-only until the stream answers)"
    body = Readiness(ready=ok, components={"warehouse": detail, "models": models, "risk": risk_status})
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.METRICS_READ))]) -> Response:
    """Request latency histograms, decisions by outcome, consumer lag, model versions."""
    for kind, st in services.hub.status().items():
        if st["loaded"]:
            services.metrics.model_version.labels(kind, st["loaded"]).set(1)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/audit", summary="The audit trail of personal-data reads, newest first")
def audit(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.AUDIT_READ))],
          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          key_id: Annotated[str | None, Query(min_length=1, max_length=16, pattern=r"^[0-9a-f]+$")] = None) -> dict:
    return {"items": services.audit.recent(limit=limit, key_id=key_id)}


@router.get("/v1/keys", summary="API keys (ids, groups, scopes; never the keys)")
def keys(services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.KEYS_ADMIN))]) -> dict:
    return {"keys": services.keyring.listing(), "groups": {g: sorted(s) for g, s in GROUP_SCOPES.items()}}


@router.post("/v1/keys", response_model=KeyCreated, status_code=201, summary="Create an API key for a user group")
def create_key(body: KeyCreate, services: ServicesDep,
               _: Annotated[Principal, Depends(require(Scope.KEYS_ADMIN))]) -> KeyCreated:
    """The key is returned once; only its salted hash is stored."""
    key, principal = services.keyring.create(body.group, name=body.name)
    return KeyCreated(key=key, key_id=principal.key_id, group=principal.group, scopes=sorted(principal.scopes))


@router.delete("/v1/keys/{key_id}", summary="Revoke an API key", responses={404: {"description": "unknown key"}})
def revoke_key(key_id: Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[0-9a-f]+$")],
               services: ServicesDep, _: Annotated[Principal, Depends(require(Scope.KEYS_ADMIN))]) -> dict:
    if not services.keyring.revoke(key_id):
        raise HTTPException(404, "unknown key")
    return {"revoked": key_id}

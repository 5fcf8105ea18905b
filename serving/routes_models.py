"""Model registry over HTTP: versions, metrics, compare, promote, roll back (picked up without restart)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from models.registry import RegistryError
from serving.auth import Principal, Scope, require
from serving.deps import ServicesDep
from serving.schemas import Kind, ModelVersion, PromoteBody

router = APIRouter(prefix="/v1/models", tags=["models"])
Reader = Annotated[Principal, Depends(require(Scope.MODELS_READ))]
Writer = Annotated[Principal, Depends(require(Scope.MODELS_WRITE))]
KindPath = Annotated[Kind, Path()]
ERRORS = {404: {"description": "unknown kind or version"}, 409: {"description": "nothing to roll back to"}}


def _versions(services, kind: str) -> list[ModelVersion]:
    current = services.registry.current_version(kind)
    return [ModelVersion(**m.to_dict(), current=m.version == current) for m in services.registry.versions(kind)]


@router.get("", summary="Every model kind with its promoted version and headline metrics")
def list_models(services: ServicesDep, _: Reader) -> dict:
    """Kinds in the registry, the promoted and the loaded version of each."""
    out = []
    status = services.hub.status()
    for kind in sorted(set(services.registry.kinds()) | set(status)):
        current = services.registry.current_version(kind)
        metrics = services.registry.meta(kind, current).metrics if current else {}
        out.append({"kind": kind, "current": current, "versions": len(services.registry.versions(kind)),
                    "metrics": metrics, "loaded": status.get(kind, {}).get("loaded")})
    return {"models": out}


@router.get("/{kind}", response_model=list[ModelVersion], summary="Versions of a model kind", responses=ERRORS)
def versions(kind: KindPath, services: ServicesDep, _: Reader) -> list[ModelVersion]:
    """Every version with metrics, parameters and data window; ``current`` marks the promoted one."""
    out = _versions(services, kind)
    if not out:
        raise HTTPException(404, f"no versions of {kind}")
    return out


@router.get("/{kind}/compare", summary="Metrics of two versions side by side", responses=ERRORS)
def compare(kind: KindPath, services: ServicesDep, _: Reader,
            a: Annotated[str, Query(min_length=1, max_length=81, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")],
            b: Annotated[str, Query(min_length=1, max_length=81, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]) -> dict:
    try:
        return {"kind": kind, "a": a, "b": b,
                "metrics": {k: list(v) for k, v in services.registry.compare(kind, a, b).items()}}
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/{kind}/history", summary="Promotions and rollbacks, newest last", responses=ERRORS)
def history(kind: KindPath, services: ServicesDep, _: Reader) -> list[dict]:
    return services.registry.history(kind)


@router.post("/{kind}/promote", summary="Promote a version; servers pick it up without a restart", responses=ERRORS)
def promote(kind: KindPath, body: PromoteBody, services: ServicesDep, principal: Writer) -> dict:
    try:
        services.registry.promote(kind, body.version, reason=f"{body.reason} (key {principal.key_id})")
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from None
    services.hub.refresh(kind)
    return {"kind": kind, "current": services.registry.current_version(kind)}


@router.post("/{kind}/rollback", summary="Return to the previously promoted version", responses=ERRORS)
def rollback(kind: KindPath, services: ServicesDep, principal: Writer) -> dict:
    try:
        target = services.registry.rollback(kind)
    except RegistryError as exc:
        code = 404 if "unknown" in str(exc) or "invalid" in str(exc) else 409
        raise HTTPException(code, str(exc)) from None
    services.hub.refresh(kind)
    return {"kind": kind, "current": target}

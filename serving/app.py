"""The FastAPI application factory: ``create_app(settings)`` wires the real warehouse, registry and risk router.

>>> from fuelcard.settings import Settings
>>> app = create_app(Settings(data_dir="/tmp/fuelcard-doctest", warehouse_url="none://"))
>>> sorted(r.path for r in app.routes if getattr(r, "path", "").startswith("/v1/models"))[:2]
['/v1/models', '/v1/models/{kind}']
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from fuelcard.settings import Settings
from models.registry import Registry
from serving import adapters
from serving.audit import JsonlAuditStore, WarehouseAuditStore
from serving.auth import FileKeyStore, KeyRing, Scope, demo_keys, require
from serving.deps import Services
from serving.hub import Loader, ModelHub
from serving.metrics import LagSource, Metrics
from serving.middleware import BodyLimitMiddleware, ObserveMiddleware
from serving.ports import AnalyticsSource, AuditStore, Conflict, KeyStore, NotFound, NotReady, ReviewStore, SqlPort
from serving.redact import install_log_filter

log = logging.getLogger("serving")
MAX_BODY_BYTES = 64 * 1024

DESCRIPTION = """
Risk decisions for the transaction path, points, churn, pricing, demand, stock alerts, site selection, the
manual-review queue and the model registry of the fuel-card network.

**Authentication**: send an API key as `X-API-Key: <key>` (or `Authorization: Bearer <key>`). Each endpoint
needs one scope; keys belong to a user group (transaction_path, marketing, analyst, reviewer, admin) whose
scopes are listed at `GET /v1/keys` (admin). Personal data is masked unless the key holds `pii:read` and the
request says `reveal=true` with an `X-Purpose` header; every personal-data read is written to the audit trail.

**Errors**: 401 no/invalid key, 403 missing scope, 404 unknown entity, 409 conflicting state, 413 body over
64 KiB, 422 invalid input (field-level messages), 503 a dependency is not ready (e.g. `model not trained`).
"""


def _validation_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    # Field-level messages without echoing the submitted values (they may be personal data).
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append({"loc": loc, "field": ".".join(loc[1:]) or ".".join(loc), "msg": err.get("msg", "invalid"),
                       "type": err.get("type", "value_error")})
    return JSONResponse({"detail": errors}, status_code=422)


def _not_ready(_: Request, exc: NotReady) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "component": exc.what}, status_code=503,
                        headers={"Retry-After": "30"})


def _not_found(_: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc) or "not found"}, status_code=404)


def _conflict(_: Request, exc: Conflict) -> JSONResponse:
    return JSONResponse({"detail": str(exc) or "conflict"}, status_code=409)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = getattr(request.state, "request_id", "")
    log.error("unhandled %s on %s %s (request %s)", type(exc).__name__, request.method,
              request.scope.get("route").path if request.scope.get("route") else "?", rid)
    return JSONResponse({"detail": "internal error", "request_id": rid}, status_code=500)


def create_app(
    settings: Settings | None = None,
    *,
    sql: SqlPort | None = None,
    analytics: AnalyticsSource | None = None,
    reviews: ReviewStore | None = None,
    audit: AuditStore | None = None,
    keystore: KeyStore | None = None,
    registry: Registry | None = None,
    loaders: dict[str, Loader] | None = None,
    lag: LagSource | None = None,
    risk_router: Any | None = None,
    with_demo_keys: bool | None = None,
    connect_warehouse: bool = True,
) -> FastAPI:
    """Build the API. Defaults wire the real pieces from ``settings``:

    - warehouse: ``warehouse.connect(settings.warehouse_url)`` (unless ``sql`` is given);
    - registry: ``Registry(settings.registry_dir)`` with loaders for every model kind;
    - risk router: ``serving.risk`` (the speed layer's synchronous decision endpoint), mounted under the
      ``risk:decide`` scope;
    - keys: hashed, in ``<data_dir>/serving/api_keys.json``; demo keys per group outside production;
    - audit: a warehouse table (a JSON-lines file only when no warehouse is configured).
    """
    settings = settings or Settings()
    install_log_filter([settings.admin_api_key.get_secret_value(), settings.api_key_salt.get_secret_value(),
                        settings.sm4_key.get_secret_value(), settings.token_key.get_secret_value()])
    warehouse_error = None
    if sql is None and connect_warehouse:
        sql, warehouse_error = adapters.connect_warehouse(settings)
    if sql is not None:
        analytics = analytics or adapters.WarehouseAnalytics(sql)
        reviews = reviews or adapters.WarehouseReviews(sql)
    registry = registry or Registry(settings.registry_dir)
    hub = ModelHub(registry, loaders if loaders is not None else adapters.default_loaders(sql))
    metrics = Metrics(decisions=adapters.decision_counts(sql) if sql is not None else None,
                      lag=lag if lag is not None else adapters.default_lag_source(settings))
    if audit is None:
        audit = WarehouseAuditStore(sql) if sql is not None else JsonlAuditStore(
            Path(settings.data_dir) / "serving" / "audit.jsonl")
    keyring = KeyRing(keystore or FileKeyStore(Path(settings.data_dir) / "serving" / "api_keys.json"),
                      salt=settings.api_key_salt.get_secret_value(),
                      admin_key=settings.admin_api_key.get_secret_value())
    demo = {}
    if with_demo_keys if with_demo_keys is not None else settings.env != "production":
        seed = settings.admin_api_key.get_secret_value() + settings.api_key_salt.get_secret_value()
        demo = demo_keys(keyring, seed=seed)
    services = Services(settings=settings, keyring=keyring, audit=audit, registry=registry, hub=hub, metrics=metrics,
                        sql=sql, analytics=analytics, reviews=reviews, demo_keys=demo, warehouse_error=warehouse_error)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from serving import loopwatch

        watch = loopwatch.from_env()  # FUELCARD_LOOP_WATCH_MS: event-loop stall detector (debug option)
        if watch is not None:
            watch.start()
            app.state.loopwatch = watch
        prepare_for_serving(services)
        stop_refresh = threading.Event()
        refresh_models(services, stop_refresh)
        if services.analytics is not None:
            from serving.routes_dashboard import warm

            warm(services)
        yield
        stop_refresh.set()
        if watch is not None:
            await watch.stop()
        with contextlib.suppress(Exception):
            audit.flush()
        risk_service = getattr(app.state, "risk_service", None)
        if risk_service is not None:
            with contextlib.suppress(Exception):
                await risk_service.close()
        hook = getattr(app.state, "on_shutdown", None)  # e.g. dump a profile (uvicorn re-raises SIGTERM)
        if hook is not None:
            hook()

    from serving.risk import fastapi_telemetry

    app = FastAPI(title="fuelcard API", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  telemetry=fastapi_telemetry(),
                  openapi_tags=[{"name": t} for t in ("risk", "points", "churn", "pricing", "demand", "alerts",
                                                      "sites", "review", "models", "dashboard", "operations")])
    app.state.services = services
    app.state.keyring = keyring
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(NotReady, _not_ready)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(Exception, _unexpected)

    from serving import (
        routes_analytics,
        routes_churn,
        routes_dashboard,
        routes_models,
        routes_ops,
        routes_points,
        routes_review,
    )

    for module in (routes_ops, routes_points, routes_churn, routes_analytics, routes_review, routes_models,
                   routes_dashboard):
        inline_model_endpoints(module.router)
        app.include_router(module.router)
    _mount_risk(app, settings, services, risk_router)

    app.mount("/dashboard", StaticFiles(directory=routes_dashboard.STATIC_DIR, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    risk_service = getattr(app.state, "risk_service", None)
    if risk_service is not None:  # innermost: /v1/risk/decide skips FastAPI's per-request machinery
        from serving.risk import DecideFastPath

        app.add_middleware(DecideFastPath, service=risk_service, keyring=keyring, scope=Scope.RISK_DECIDE,
                           max_body=MAX_BODY_BYTES)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES, metrics=metrics)
    return app


def prepare_for_serving(services: Services) -> None:
    """At startup, before the first request: load every servable model kind and the masked contacts (so the model
    endpoints are lookups from the first request on, see :func:`inline_model_endpoints`), then move everything
    alive into the garbage collector's permanent generation (``gc.freeze``). Without it, each full collection
    walks every object of the loaded views and of whatever built them: one took 336 ms under load in the API
    benchmark, a stall of every request in flight."""
    import gc

    for kind in sorted(services.hub.loaders):
        with contextlib.suppress(Exception):  # not trained / cannot load: its endpoints answer 503 and say why
            services.hub.get(kind)
    masked = getattr(services.analytics, "masked_contacts", None)
    if masked is not None:
        with contextlib.suppress(Exception):
            masked([])
    gc.collect()
    gc.freeze()
    # A full collection over the now empty oldest generation: it resets the collector's count of long-lived
    # objects, which otherwise stays at the size of the frozen heap and lets a quarter of that pile up before
    # the next full collection (one of 222 ms in the benchmark after a freeze alone).
    gc.collect()


def refresh_models(services: Services, stop: threading.Event) -> threading.Thread:
    """A background thread that re-reads ``CURRENT`` of every loaded kind when half of
    :attr:`ModelHub.check_every_s` has passed (and loads a newly promoted version there): requests find the hub's
    check fresh and stay on the event loop; a promotion by another process is served within ``check_every_s``."""
    hub = services.hub

    def run() -> None:
        while not stop.wait(max(hub.check_every_s / 4, 0.05)):
            for kind in list(hub._loaded):  # noqa: SLF001
                # re-read once half the interval has passed: a request never finds the check due
                if time.monotonic() - hub._checked.get(kind, 0.0) < hub.check_every_s / 2:  # noqa: SLF001
                    continue
                with contextlib.suppress(Exception):  # a failed load keeps the previous version; status says why
                    hub.refresh(kind)
                    hub.get(kind)

    thread = threading.Thread(target=run, name="model-refresh", daemon=True)
    thread.start()
    return thread


#: Model endpoints whose work is a lookup in an in-memory model view (``serving/model_views.py``): route template →
#: the model kinds it reads. See :func:`inline_model_endpoints`.
INLINE_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/v1/churn/members/{member_id}": ("churn",),
    "/v1/churn/segments": ("churn",),
    "/v1/churn/segments/members": ("churn",),
    "/v1/pricing/recommendations": ("pricing",),
    "/v1/demand/forecast": ("demand",),
    "/v1/demand/replenishment": ("demand",),
    "/v1/sites/recommendations": ("sites",),
    "/v1/sites/stations/{station_id}": ("sites",),
}
#: Of those, the ones that add masked contact details (an in-memory copy once loaded, see ``masked_contacts``).
CONTACT_ENDPOINTS = frozenset({"/v1/churn/members/{member_id}", "/v1/churn/segments/members"})


def _can_inline(kinds: tuple[str, ...], contacts: bool, kwargs: dict[str, Any]) -> bool:
    """True when the endpoint will do no I/O: its models are loaded and need no ``CURRENT`` re-read now
    (:meth:`ModelHub.get`'s fast path; :func:`refresh_models` keeps it so), masked contacts (churn member lists)
    are in memory, nothing is revealed."""
    services: Services | None = kwargs.get("services")
    if services is None or kwargs.get("reveal"):
        return False
    hub = services.hub
    now = time.monotonic()
    for kind in kinds:
        loaded = hub._loaded.get(kind)  # noqa: SLF001
        if loaded is None:
            return False
        if now - hub._checked.get(kind, 0.0) >= hub.check_every_s:  # noqa: SLF001
            return False  # ModelHub.get would re-read CURRENT (file I/O; a load if it changed): not on the loop
    if contacts and services.analytics is not None and hasattr(services.analytics, "masked_contacts"):
        return getattr(services.analytics, "_masked", None) is not None
    return True


def inline_model_endpoints(router: Any) -> None:
    """Run the model endpoints of :data:`INLINE_ENDPOINTS` on the event loop when they are pure lookups.

    Their route functions are plain ``def`` (a model load, a registry read or a warehouse read can happen in them),
    so FastAPI would run each call, and the validation of its response, on its thread pool: two thread hops per
    request, each a GIL hand-over between the event loop and a worker thread. Under load those hand-overs were the
    event loop's stalls (the loop thread blocked on the GIL while worker threads ran; ``serving.loopwatch``). The
    wrapper calls the function directly when :func:`_can_inline` says it will do no I/O, and on the thread pool
    otherwise (a ``CURRENT`` re-read that :func:`refresh_models` did not do in time, a model load after a
    promotion through this API, the first load of the masked contacts, unmasked reads). The endpoint's signature,
    documentation and responses are the route function's own (``functools.wraps``). Idempotent; modifies the
    router's routes in place.
    """
    from fastapi.routing import APIRoute
    from starlette.concurrency import run_in_threadpool

    prefix = getattr(router, "prefix", "")
    for route in router.routes:
        if not isinstance(route, APIRoute) or getattr(route.endpoint, "_inline_kinds", None) is not None:
            continue
        path = route.path if route.path.startswith(prefix) else prefix + route.path
        kinds = INLINE_ENDPOINTS.get(path)
        if kinds is None or "GET" not in route.methods:
            continue
        fn = route.endpoint

        def make(fn: Any = fn, kinds: tuple[str, ...] = kinds, contacts: bool = path in CONTACT_ENDPOINTS) -> Any:
            @functools.wraps(fn)
            async def endpoint(*args: Any, **kwargs: Any) -> Any:
                if _can_inline(kinds, contacts, kwargs):
                    return fn(*args, **kwargs)
                return await run_in_threadpool(fn, *args, **kwargs)

            endpoint._inline_kinds = kinds  # type: ignore[attr-defined]
            return endpoint

        route.endpoint = make()


def _mount_risk(app: FastAPI, settings: Settings, services: Services, risk_router: Any | None) -> None:
    """Mount the speed layer's decision router (``serving/risk.py``) behind the ``risk:decide`` scope."""
    from fastapi import Depends

    router = risk_router
    if router is None:
        router, error = adapters.load_risk_router(settings, services)
        if router is None:
            @app.post("/v1/risk/decide", tags=["risk"], summary="Risk decision for an authorisation",
                      dependencies=[Depends(require(Scope.RISK_DECIDE))],
                      responses={503: {"description": "risk scorer not available"}})
            def risk_unavailable() -> None:
                raise HTTPException(503, f"risk scorer not available: {error}")
            return
    app.include_router(router, dependencies=[Depends(require(Scope.RISK_DECIDE))])
    app.state.risk_service = getattr(router, "risk_service", None)


def profile_from_env(app: FastAPI) -> None:
    """``FUELCARD_API_PROFILE=FILE``: profile the server's main thread with cProfile, written to FILE at shutdown
    (benchmark servers: ``serving.testing serve``, ``serving.risk``)."""
    import os

    prof_path = os.environ.get("FUELCARD_API_PROFILE")
    if prof_path:
        import cProfile

        prof = cProfile.Profile()

        def dump() -> None:
            prof.disable()
            prof.dump_stats(prof_path)

        app.state.on_shutdown = dump
        prof.enable()

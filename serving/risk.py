"""Synchronous risk decisions for the transaction path: ``POST /v1/risk/decide`` (Authorisation → Decision).

Design (measured and argued in docs/STREAMING.md): the stream's risk agent is the **only** writer of per-card
state. The endpoint does not score against a copy of that state; it hands the authorisation to the stream and
waits for the stream's decision:

1. produce the authorisation to the ``authorisations`` topic, keyed by card (the partition that holds the
   card's state and every earlier authorisation of the card, in order);
2. the risk agent decides it with the card's table state (exactly like any streamed authorisation) and
   publishes the decision;
3. this process reads the ``decisions`` topic (all partitions, no consumer group) and completes the request.

So no decision can miss an earlier, already-decided transaction of its card, with no second copy of state to
keep in sync and no split brain between API and stream. If the decision has not arrived within the time budget
(``score_budget_ms``), or the broker is unreachable, the endpoint answers a **rules-only decision on the
authorisation alone, marked ``degraded``** — the payment is never failed by the speed layer. The stream still
decides that authorisation later; its (non-degraded) decision is the one that lands in the decisions topic,
the review queue and the warehouse.

A retried request with the same ``tx_id`` gets the decision already made (the agent never decides one tx twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from fuelcard.events import Authorisation, Decision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RiskServiceConfig:
    """Where the stream is and how long the transaction path may wait for it."""

    bootstrap: str
    prefix: str = "fuelcard"
    budget_ms: float = 20.0
    reconnect_every_s: float = 2.0
    recent_decisions: int = 200_000
    artifacts_dir: str | None = None
    # Direct path: ports of the risk workers' direct-decision servers, index = static shard (worker k owns
    # the authorisation partitions p with p % len(direct_ports) == k). Empty = Kafka round trip only.
    direct_ports: tuple[int, ...] = ()

    @property
    def authorisations_topic(self) -> str:
        return f"{self.prefix}.authorisations"

    @property
    def decisions_topic(self) -> str:
        return f"{self.prefix}.decisions"


class _DirectConn:
    """One pipelined JSON-lines connection to a risk worker's direct-decision server."""

    def __init__(self, port: int, on_late: Any = None) -> None:
        self.port = port
        self.on_late = on_late  # called with a reply that came after its request's budget had run out
        self.writer: asyncio.StreamWriter | None = None
        self.waiters: deque[asyncio.Future[bytes | None]] = deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._out: list[bytes] = []

    async def ensure(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            return
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.waiters = deque()
        self._out = []
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, self.waiters))

    async def _read(self, reader: asyncio.StreamReader, waiters: deque[asyncio.Future[bytes | None]]) -> None:
        try:
            while line := await reader.readline():
                w = waiters.popleft()
                if not w.done():
                    w.set_result(line)
                elif self.on_late is not None:
                    self.on_late(line)
        except Exception:  # noqa: BLE001, S110 - the connection is gone; pending requests fall back below
            pass
        finally:
            self.writer = None
            while waiters:
                w = waiters.popleft()
                if not w.done():
                    w.set_result(None)

    def ask(self, line: bytes) -> asyncio.Future[bytes | None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes | None] = loop.create_future()
        assert self.writer is not None
        self.waiters.append(fut)
        # Lines of one event-loop tick leave in one write (one syscall, one wake-up of the worker).
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(line)
        return fut

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.writer is not None and not self.writer.is_closing():
            self.writer.write(b"\n".join(out) + b"\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


class RiskService:
    """Hands authorisations to the stream and waits (within budget) for the stream's decision."""

    def __init__(self, config: RiskServiceConfig, *, engine: Any = None) -> None:
        from streams.engine import load_engine

        self.config = config
        self.engine = engine or load_engine(artifacts_dir=config.artifacts_dir)
        self._pending: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._sent_once = False
        self._direct = [_DirectConn(p, self._on_late_direct) for p in config.direct_ports]
        self._partitioner: Any = None
        self._parts = 0
        self._part_of: dict[bytes, int] = {}
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._producer: Any = None
        self._consumer: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._next_try = 0.0
        self.last_error = ""
        self.counts = {"direct": 0, "stream": 0, "degraded": 0, "cached": 0, "timeout": 0, "unavailable": 0}

    # ------------------------------------------------------------ connection management
    @property
    def connected(self) -> bool:
        return self._producer is not None and self._reader is not None and not self._reader.done()

    async def start(self, *, wait: bool = True) -> None:
        """Connect to the broker (producer + decisions reader). Never raises: failures mean degraded mode."""
        if wait:
            await self._connect()
        else:
            self._ensure_connecting()

    def _ensure_connecting(self) -> None:
        if self.connected or (self._connecting and not self._connecting.done()):
            return
        if time.monotonic() < self._next_try:
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        await self._close_clients()
        self._next_try = time.monotonic() + self.config.reconnect_every_s
        producer = consumer = None
        try:
            producer = AIOKafkaProducer(bootstrap_servers=self.config.bootstrap, linger_ms=0, acks=1,
                                        request_timeout_ms=5000)
            await asyncio.wait_for(producer.start(), timeout=5)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.config.bootstrap, group_id=None,
                                        enable_auto_commit=False, fetch_max_wait_ms=20, max_poll_records=5000)
            await asyncio.wait_for(consumer.start(), timeout=5)
            from streams.direct import pace_empty_fetches

            # The broker answers empty fetches at once (an idle reader would burn ~0.25 core). With direct ports
            # the reader only serves the Kafka fallback and retries, so every fetch is paced.
            pace_empty_fetches(consumer, 0.02 if self._direct else 0.005, all_fetches=bool(self._direct))
            parts = consumer.partitions_for_topic(self.config.decisions_topic)
            if not parts:
                raise RuntimeError(f"topic {self.config.decisions_topic} does not exist")
            tps = [TopicPartition(self.config.decisions_topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
        except Exception as exc:  # noqa: BLE001 - unavailable stream side → degraded answers, retry later
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("risk service: stream side unavailable (%s); answering degraded", self.last_error)
            for c in (consumer, producer):
                if c is not None:
                    with contextlib.suppress(Exception):
                        await c.stop()
            return
        self._producer, self._consumer = producer, consumer
        self._reader = asyncio.get_running_loop().create_task(self._read_decisions())
        self.last_error = ""

    async def _read_decisions(self) -> None:
        consumer = self._consumer
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for msgs in batches.values():
                    for m in msgs:
                        self._on_decision(m.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the reader dies → degraded until reconnected
            self.last_error = f"decision reader: {type(exc).__name__}: {exc}"[:300]
            log.warning("risk service: %s", self.last_error)

    def _on_decision(self, raw: bytes) -> None:
        try:
            value = orjson.loads(raw)
            items = value if isinstance(value, list) else [value]  # an envelope of decisions, or one
        except Exception:  # noqa: BLE001
            return
        recent, pending = self._recent, self._pending
        for d in items:
            try:
                tx_id = d["tx_id"]
            except Exception:  # noqa: BLE001, S112 - not a decision
                continue
            waiters = pending.pop(tx_id, None)
            if waiters is None and tx_id in recent:
                continue  # answered on the direct path (remembered then): nothing to do
            body = raw if items is not value else orjson.dumps(d)
            self._remember(tx_id, body)
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(body)

    def _on_late_direct(self, line: bytes) -> None:
        """A worker's decision that came after its request's budget (that request was answered degraded): kept
        for a retry of the same transaction, which must get the decision the stream made."""
        if line.startswith(b'{"error"'):
            return
        raw = line.rstrip(b"\n")
        with contextlib.suppress(Exception):
            self._remember(orjson.loads(raw)["tx_id"], raw)

    def _remember(self, tx_id: str, raw: bytes) -> None:
        recent = self._recent
        recent[tx_id] = raw
        if len(recent) > self.config.recent_decisions:
            recent.popitem(last=False)

    async def _close_clients(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        for c in (self._consumer, self._producer):
            if c is not None:
                # aiokafka's stop() may leak its internal tasks' CancelledError when the broker is gone
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(c.stop(), timeout=5)
        self._reader = self._consumer = self._producer = None

    async def close(self) -> None:
        """Disconnect."""
        for conn in self._direct:
            conn.close()
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        await self._close_clients()

    # ------------------------------------------------------------ deciding
    def _degraded(self, auth: Authorisation, why: str, t0: float) -> bytes:
        self.counts["degraded"] += 1
        d = self.engine.decide_degraded(auth)
        body = d.model_dump(mode="json")
        body["degraded"] = True
        body["reasons"] = [*body.get("reasons", []), f"DEGRADED_{why.upper()}"]
        body["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        return orjson.dumps(body)

    async def decide_raw(self, auth: Authorisation) -> bytes:
        """The decision as JSON bytes: the stream's, or a degraded one within the budget."""
        t0 = time.perf_counter()
        cached = self._recent.get(auth.tx_id)
        if cached is not None:
            self.counts["cached"] += 1
            return cached
        if self._direct:
            raw = await self._decide_direct(auth, t0)
            if raw is not None:
                return raw
        if not self.connected:
            self._ensure_connecting()
            self.counts["unavailable"] += 1
            return self._degraded(auth, "stream_unavailable", t0)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes | None] = loop.create_future()
        waiters = self._pending.setdefault(auth.tx_id, [])
        waiters.append(waiter)
        cached = self._recent.get(auth.tx_id)  # it may have arrived while we tried the direct path
        if cached is not None:
            waiters.remove(waiter)
            if not waiters:
                self._pending.pop(auth.tx_id, None)
            self.counts["cached"] += 1
            return cached
        # One timer per request instead of wait_for/shield tasks: when the budget is spent the waiter resolves to
        # None and the request answers degraded.
        deadline = loop.call_later(max(0.0, self.config.budget_ms / 1000 - (time.perf_counter() - t0)),
                                   _expire, waiter)
        try:
            send = self._producer.send(self.config.authorisations_topic, auth.model_dump_json().encode(),
                                       key=auth.card_id.encode())
            if not self._sent_once:  # the first send may wait for topic metadata: bound it by the budget
                delivery = await asyncio.wait_for(send, timeout=self.config.budget_ms / 1000)
                self._sent_once = True
            else:
                delivery = await send  # enqueued; delivery is not awaited: the decision coming back proves it
            delivery.add_done_callback(_consume_exception)
            raw = await waiter
        except Exception as exc:  # noqa: BLE001 - broker trouble → degraded, reconnect in the background
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.counts["unavailable"] += 1
            return self._degraded(auth, "stream_unavailable", t0)
        finally:
            deadline.cancel()
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._pending.pop(auth.tx_id, None)
        if raw is None:
            self.counts["timeout"] += 1
            return self._degraded(auth, "stream_timeout", t0)
        self.counts["stream"] += 1
        return raw

    async def _decide_direct(self, auth: Authorisation, t0: float) -> bytes | None:
        """Ask the worker that owns the card's partition; None = use the Kafka path with what is left."""
        if self._partitioner is None:
            from streams.direct import kafka_partition
            from streams.topics import AUTHORISATIONS

            self._partitioner = kafka_partition
            self._parts = AUTHORISATIONS.partitions
        key = auth.card_id.encode()
        part = self._part_of.get(key)
        if part is None:  # murmur2 in pure Python: once per card, not once per request
            if len(self._part_of) > 1_000_000:
                self._part_of.clear()
            part = self._part_of[key] = self._partitioner(key, self._parts)
        conn = self._direct[part % len(self._direct)]
        budget = self.config.budget_ms / 1000
        try:
            if conn.writer is None or conn.writer.is_closing():
                await asyncio.wait_for(conn.ensure(), timeout=max(0.001, budget - (time.perf_counter() - t0)))
            fut = conn.ask(auth.model_dump_json().encode())
        except Exception:  # noqa: BLE001 - worker unreachable: try the Kafka path
            return None
        deadline = asyncio.get_running_loop().call_later(
            max(0.0, budget - (time.perf_counter() - t0)), _expire_direct, fut)
        try:
            raw = await fut
        finally:
            deadline.cancel()
        if raw == _TIMED_OUT:
            # (the event loop's timers may fire a little early: never hand a spent budget to the Kafka path)
            cached = self._recent.get(auth.tx_id)  # the reply may have come in the same tick
            if cached is not None:
                self.counts["cached"] += 1
                return cached
            self.counts["timeout"] += 1
            return self._degraded(auth, "stream_timeout", t0)
        if raw is None:
            return None  # connection lost: the Kafka path may still make it
        if raw.startswith(b'{"error"'):
            return None
        self.counts["direct"] += 1
        raw = raw.rstrip(b"\n")
        self._remember(auth.tx_id, raw)  # a retry must find it even before the decisions topic delivers it
        return raw

    async def decide(self, auth: Authorisation) -> Decision:
        """The decision as a model."""
        return Decision.model_validate_json(await self.decide_raw(auth))

    def status(self) -> dict[str, Any]:
        """Connection state and counters (for ops endpoints and tests)."""
        return {"connected": self.connected, "last_error": self.last_error, "pending": len(self._pending),
                **self.counts}


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("authorisation delivery failed: %r", fut.exception())


def _expire(waiter: asyncio.Future[bytes | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_TIMED_OUT = b""  # what a direct request's future holds when its budget ran out (None: connection lost)


def _expire_direct(waiter: asyncio.Future[bytes | None]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


def fastapi_telemetry() -> dict[str, bool] | None:
    """FastAPI's native OpenTelemetry hooks: off unless asked for (``FASTAPI_OTEL_AUTO_CONFIGURE=true`` or an
    ``OTEL_*_EXPORTER`` variable). With no provider configured they do nothing but cost a provider lookup
    (several environment reads) on every request."""
    import os

    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true" or any(
            k.startswith("OTEL_") and k.endswith("_EXPORTER") for k in os.environ):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


DECIDE_PATH = "/v1/risk/decide"
_TOO_LARGE = object()


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Field-level 422 messages without the submitted values (they may be personal data)."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        errors.append({"loc": loc, "field": ".".join(loc[1:]) or ".".join(loc), "msg": err.get("msg", "invalid"),
                       "type": err.get("type", "value_error")})
    return errors


class _Route:
    """What the observing middleware and error handlers read from ``scope["route"]``."""

    path = DECIDE_PATH


class DecideFastPath:
    """ASGI middleware that answers ``POST /v1/risk/decide`` itself, without FastAPI's routing, dependency
    injection, request object and exception layers (about half the API's CPU per decision went there).

    Same contract as the FastAPI route it shadows (which stays declared for the OpenAPI schema): with a
    ``keyring`` the key must be valid (401) and hold ``scope`` (403); bodies over ``max_body`` bytes are refused
    (413); invalid authorisations are 422 with field-level messages that never echo the submitted values; the
    answer is the stream's decision or the degraded one, with ``x-decision-source``. Everything else passes
    through to the wrapped app. Placed inside the observing middleware, so request ids, security headers,
    latency metrics and decision counters stay as they are for every route.
    """

    def __init__(self, app: Any, *, service: RiskService, keyring: Any = None, scope: str = "risk:decide",
                 max_body: int = 64 * 1024) -> None:
        self.app, self.service, self.keyring, self.needs, self.max_body = app, service, keyring, scope, max_body
        self._started = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != DECIDE_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = _Route
        if self.keyring is not None:
            key = ""
            for name, value in scope["headers"]:
                if name == b"x-api-key":
                    key = value.decode("latin-1")
                    break
                if name == b"authorization" and value[:7].lower() == b"bearer ":
                    key = value[7:].decode("latin-1").strip()
            principal = self.keyring.check(key)
            if principal is None:
                await _json(send, 401, {"detail": "missing or invalid API key"},
                            [(b"www-authenticate", b"Bearer")])
                return
            if not principal.has(self.needs):
                await _json(send, 403, {"detail": f"this key lacks the scope {self.needs}"})
                return
            scope.setdefault("state", {})["principal"] = principal
        body = await _read_body(receive, self.max_body)
        if body is _TOO_LARGE:
            await _json(send, 413, {"detail": f"request body larger than {self.max_body} bytes"})
            return
        try:
            auth = Authorisation.model_validate_json(body)  # type: ignore[arg-type]
        except ValidationError as exc:
            await _json(send, 422, {"detail": validation_errors(exc)})
            return
        svc = self.service
        if not self._started:
            self._started = True
            await svc.start(wait=False)
        raw = await svc.decide_raw(auth)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (b"x-decision-source", b"fallback" if b"DEGRADED_STREAM_" in raw else b"stream")]})
        await send({"type": "http.response.body", "body": raw})


async def _read_body(receive: Any, limit: int) -> bytes | object:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _json(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


def config_from_settings(settings: Any, *, prefix: str | None = None,
                         direct_ports: tuple[int, ...] = ()) -> RiskServiceConfig:
    """Service config from :class:`fuelcard.settings.Settings` (+ the risk workers' direct ports, if any)."""
    from streams.broker import bootstrap_servers

    return RiskServiceConfig(bootstrap=bootstrap_servers(settings.kafka_bootstrap),
                             prefix=prefix or getattr(settings, "stream_prefix", None) or "fuelcard",
                             budget_ms=float(settings.score_budget_ms),
                             artifacts_dir=str(getattr(settings, "registry_dir", settings.artifacts_dir)),
                             direct_ports=tuple(direct_ports))


def create_router(settings: Any = None, *, service: RiskService | None = None, prefix: str | None = None,
                  direct_ports: tuple[int, ...] = ()) -> APIRouter:
    """``POST /v1/risk/decide`` and ``GET /v1/risk/status``; the service connects lazily on first use.

    ``direct_ports``: the risk workers' direct-decision ports (worker k owns partitions p % n == k); empty = the
    Kafka round trip only.
    """
    if service is None:
        if settings is None:
            from fuelcard.settings import load_settings

            settings = load_settings()
        service = RiskService(config_from_settings(settings, prefix=prefix, direct_ports=direct_ports))
    svc = service
    router = APIRouter(prefix="/v1/risk", tags=["risk"])
    started = {"done": False}

    @router.post("/decide", response_model=Decision, summary="Risk decision for an authorisation",
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                     "schema": Authorisation.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
                 description="Answers within the time budget: the stream's decision (same per-card state as the "
                             "stream) or a rules-only decision marked `degraded`.")
    async def decide(request: Request) -> Response:
        # Parsed straight from the bytes by pydantic-core (FastAPI's body parameter goes JSON → dict → model,
        # about twice the work on the hot path); errors are the same 422 FastAPI would give.
        try:
            auth = Authorisation.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        if not started["done"]:
            started["done"] = True
            await svc.start(wait=False)
        body = await svc.decide_raw(auth)
        # Where the answer came from: the stream (same per-card state) or the degraded fallback.
        source = "fallback" if b"DEGRADED_STREAM_" in body else "stream"
        return Response(content=body, media_type="application/json", headers={"x-decision-source": source})

    @router.get("/status", summary="Connection to the stream and decision counters")
    async def status() -> dict[str, Any]:
        return svc.status()

    router.risk_service = svc  # type: ignore[attr-defined]
    return router


def create_app(settings: Any = None, *, service: RiskService | None = None, prefix: str | None = None) -> FastAPI:
    """A standalone app with only the risk endpoint (benchmarks, tests, a dedicated transaction-path tier)."""
    router = create_router(settings, service=service, prefix=prefix)
    svc: RiskService = router.risk_service  # type: ignore[attr-defined]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await svc.start(wait=True)
        started = getattr(app.state, "on_started", None)  # e.g. freeze the start-up heap (serve_main)
        if started is not None:
            started()
        try:
            yield
        finally:
            await svc.close()
            hook = getattr(app.state, "on_shutdown", None)  # e.g. dump a profile (uvicorn re-raises SIGTERM)
            if hook is not None:
                hook()

    app = FastAPI(title="fuelcard risk decisions", lifespan=lifespan, telemetry=fastapi_telemetry())
    app.include_router(router)
    app.add_middleware(DecideFastPath, service=svc)
    app.state.risk_service = svc
    return app


def freeze_startup_heap(threshold0: int = 20_000) -> None:
    """Move everything alive after start-up (FastAPI, pydantic schemas, aiokafka, the scoring core and its model)
    out of the garbage collector's reach and collect the young generation less often: a full collection of
    that heap stopped the event loop for tens of milliseconds (about 70 ms on this machine) every few seconds
    under load — the transaction path's latency tail. For a process that serves only this tier."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold0, *gc.get_threshold()[1:])


def serve_main(argv: list[str] | None = None) -> None:
    """``python -m serving.risk --port P --bootstrap H:P --prefix X`` (benchmarks and local runs)."""
    import argparse

    import uvicorn

    from fuelcard.settings import load_settings

    p = argparse.ArgumentParser(prog="serving.risk")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18010)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--prefix", default="fuelcard")
    p.add_argument("--budget-ms", type=float, default=None)
    p.add_argument("--direct-ports", default="", help="comma-separated ports of the workers' direct servers")
    args = p.parse_args(argv)
    settings = load_settings()
    cfg = config_from_settings(settings, prefix=args.prefix,
                               direct_ports=tuple(int(x) for x in args.direct_ports.split(",") if x.strip()))
    cfg = dataclasses.replace(cfg, bootstrap=args.bootstrap or cfg.bootstrap, budget_ms=args.budget_ms or cfg.budget_ms)
    svc = RiskService(cfg)
    app = create_app(service=svc)
    from serving.app import profile_from_env

    profile_from_env(app)
    app.state.on_started = freeze_startup_heap
    # This tier serves the transaction path only (no keys, no observing middleware): the fast path goes in front
    # of the whole FastAPI app, so a decision skips Starlette's error, telemetry and body-limit layers too
    # (everything else, lifespan included, passes through to the app).
    uvicorn.run(DecideFastPath(app, service=svc), host=args.host, port=args.port, log_level="warning",
                access_log=False, loop="uvloop", http="httptools", proxy_headers=False, lifespan="on")


if __name__ == "__main__":
    serve_main()

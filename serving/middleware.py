"""ASGI middleware: body size limit (413), request ids, latency metrics, security headers.

Written as plain ASGI callables (not ``BaseHTTPMiddleware``) so they add microseconds, not milliseconds.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics


class BodyTooLarge(Exception):
    """The request body exceeded the limit while it was being read."""


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or while streaming (chunked)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, metrics: Metrics | None = None) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        if length is not None and (length < 0 or length > self.max_bytes):
            if self.metrics:
                self.metrics.refused.labels("body_too_large" if length > 0 else "bad_length").inc()
            status = 413 if length > self.max_bytes else 400
            detail = (f"request body larger than {self.max_bytes} bytes" if status == 413
                      else "invalid Content-Length header")
            await _send_json(send, status, {"detail": detail})
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if self.metrics:
                self.metrics.refused.labels("body_too_large").inc()
            if not started:
                await _send_json(send, 413, {"detail": f"request body larger than {self.max_bytes} bytes"})


DECISION_PATH = "/v1/risk/decide"


def _count_decision(metrics: Metrics, body: bytes) -> None:
    try:
        d = orjson.loads(body)
        metrics.decision(str(d.get("outcome", "unknown")), bool(d.get("degraded", False)))
    except (orjson.JSONDecodeError, AttributeError):
        metrics.decision("unparsable")


class ObserveMiddleware:
    """Request id (``X-Request-ID``), latency histogram by route template, and security headers."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        # Request id = random per-process prefix + counter: no ``uuid4`` (an ``os.urandom`` syscall per request
        # that releases the GIL on the event loop's thread, which then queues behind busy threads to get it back).
        self._id_prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = f"{self._id_prefix}{next(self._ids) & 0xFFFFFFFF:08x}"
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = [500]
        decision_body: list[bytes] | None = [] if scope["path"] == DECISION_PATH else None

        async def wrapped_send(message: Message) -> None:
            if decision_body is not None and message["type"] == "http.response.body":
                decision_body.append(message.get("body", b""))
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-request-id", request_id.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"cache-control", b"no-store")]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "static" if scope["path"].startswith("/dashboard") else "unmatched")
            self.metrics.observe(template, scope.get("method", ""), status_holder[0], time.perf_counter() - started)
            if decision_body and status_holder[0] == 200:
                _count_decision(self.metrics, b"".join(decision_body))

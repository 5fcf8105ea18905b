"""Direct decisions for the synchronous API, served from inside a risk worker.

The API (serving/risk.py) sends one authorisation as a JSON line over TCP on 127.0.0.1 to the worker that owns
the card's partition; the worker decides it in its own event loop with its own ``card_state`` table, publishes
the authorisation, the decision and the changelog record, and only then answers with the decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from fuelcard.events import Authorisation
from streams import topics as T
from streams.app import Outbox, StreamApp, StreamConfig, _reason


class _DirectEvent:
    """Stands in for a Faust event on the direct path: only the partition is needed (for the changelog)."""

    class _Msg:
        __slots__ = ("partition",)

        def __init__(self, partition: int) -> None:
            self.partition = partition

    def __init__(self, partition: int) -> None:
        self.message = self._Msg(partition)


def direct_server(app: Any, sa: StreamApp, cfg: StreamConfig,
                   decide_auth: Callable[[Any, Authorisation, Outbox, list[bytes] | None], bytes | None]) -> None:
    """Serve direct decisions (JSON lines over TCP on 127.0.0.1) from inside the worker."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    parts = list(range(T.AUTHORISATIONS.partitions))
    auth_topic = T.AUTHORISATIONS.name(cfg.prefix)

    def ready() -> bool:
        return bool(app.tables.recovery.completed.is_set()) and not app.rebalancing

    async def one(line: bytes) -> bytes:
        try:
            auth = Authorisation.model_validate_json(line)
        except ValidationError as exc:
            return orjson.dumps({"error": _reason(exc)})
        part = partitioner(auth.card_id.encode(), parts, parts)
        if cfg.shard is not None and part % cfg.shard[1] != cfg.shard[0]:
            return b'{"error": "not the owner of this card"}'
        if not ready():
            return b'{"error": "not ready"}'
        out: Outbox = []
        try:
            body = decide_auth(_DirectEvent(part), auth, out, None)
        except Exception as exc:  # noqa: BLE001
            return orjson.dumps({"error": _reason(exc)})
        if body is None:
            return b'{"error": "already decided"}'
        # The authorisation itself joins its partition too (warehouse sink, audit, replay); when the risk agent
        # reads it, the card's record already holds the tx id, so it has no second effect.
        out.append((auth_topic, auth.card_id.encode(), line.strip(), part))
        await sa.publish(out)  # durable before we answer
        return body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Requests on one connection are decided in arrival order (the decision itself is synchronous) and
        # answered in that order, while their publishes overlap.
        replies: asyncio.Queue[asyncio.Future[bytes] | None] = asyncio.Queue()

        async def replier() -> None:
            while (fut := await replies.get()) is not None:
                writer.write(await fut + b"\n")

        rt = asyncio.ensure_future(replier())
        try:
            while line := await reader.readline():
                replies.put_nowait(asyncio.ensure_future(one(line)))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            replies.put_nowait(None)
            with contextlib.suppress(Exception):
                await rt
            writer.close()

    @app.task
    async def direct_decisions() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", cfg.direct_port)
        async with server:
            await server.serve_forever()

"""Direct decisions for the synchronous API, served from inside a risk worker.

The API (serving/risk.py) sends authorisations as JSON lines over TCP on 127.0.0.1 to the worker that owns the
card's partition; the worker decides each one at once in its own event loop with its own ``card_state`` table,
publishes the authorisation, the decision and the changelog record, and only then answers with the decision.

Publishing is grouped (a *group commit*): every request decided in the same event-loop tick joins one publish,
which is one produce batch per topic partition built with ``create_batch``/``send_batch`` — not one ``send``
per record. Per partition the authorisations and the
decisions go out as one envelope each (a JSON array, the same format the risk agent and the sink already read
on those topics), so when the risk agent reads the authorisations back it pays Faust's per-event cost once per
envelope, not once per authorisation (each is then a duplicate: the card's record already holds its tx id).
The changelog keeps one record per card key. Publishes hand their batches to the producer one after the other
(their deliveries overlap), so a card's changelog records reach Kafka in the order its decisions were made.
Replies on a connection leave in request order, as soon as the publish that holds them is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
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

    __slots__ = ("message",)

    def __init__(self, partition: int) -> None:
        self.message = self._Msg(partition)


class _Conn:
    """One API connection: reply slots in request order, written out as soon as the head ones are filled."""

    __slots__ = ("slots", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.slots: deque[list[bytes | None]] = deque()

    def drain(self) -> None:
        slots = self.slots
        ready = []
        while slots and slots[0][0] is not None:
            ready.append(slots.popleft()[0])
        if ready and not self.writer.is_closing():
            self.writer.write(b"".join(ready))  # type: ignore[arg-type]


def pace_empty_fetches(consumer: Any, min_interval_s: float, *, all_fetches: bool = False) -> bool:
    """Make an aiokafka consumer wait ``min_interval_s`` between fetches that bring nothing (or between all
    fetches, with ``all_fetches``). True if installed.

    noida-db answers an empty fetch at once instead of holding it for ``fetch_max_wait_ms``, so an idle
    consumer loops about 400 fetches/s and burns about a quarter of a core in aiokafka's pure-Python protocol
    code (measured: 0.23 cores per idle consumer with ``fetch_max_wait_ms`` 20 or 500). This restores the wait
    the broker should have done; a fetch that brings records is not delayed (unless ``all_fetches``).
    """
    import time

    fetcher = getattr(consumer, "_fetcher", None)
    original = getattr(fetcher, "_proc_fetch_request", None)
    if fetcher is None or original is None or getattr(original, "_paced", False):
        return False

    async def paced(assignment: Any, node_id: Any, request: Any) -> Any:
        t0 = time.monotonic()
        before = dict(fetcher._records)  # noqa: SLF001
        result = await original(assignment, node_id, request)
        records = fetcher._records  # noqa: SLF001
        got = any(before.get(tp) is not rec for tp, rec in records.items())
        left = min_interval_s - (time.monotonic() - t0)
        if left > 0 and (all_fetches or not got):
            await asyncio.sleep(left)
        return result

    paced._paced = True  # type: ignore[attr-defined]
    fetcher._proc_fetch_request = paced
    return True


NOT_OWNER = b'{"error": "not the owner of this card"}\n'
NOT_READY = b'{"error": "not ready"}\n'
ALREADY = b'{"error": "already decided"}\n'


def direct_server(app: Any, sa: StreamApp, cfg: StreamConfig,
                  decide_auth: Callable[[Any, Authorisation, Outbox, list[bytes] | None], bytes | None]) -> None:
    """Serve direct decisions (JSON lines over TCP on 127.0.0.1) from inside the worker."""
    from aiokafka.partitioner import murmur2

    n_parts = T.AUTHORISATIONS.partitions
    auth_topic = T.AUTHORISATIONS.name(cfg.prefix)
    decisions_topic = T.DECISIONS.name(cfg.prefix)
    part_of: dict[bytes, int] = {}  # card key → partition (murmur2 in pure Python costs more than a decision's I/O)

    def partition(key: bytes) -> int:
        p = part_of.get(key)
        if p is None:
            if len(part_of) > 1_000_000:
                part_of.clear()
            # aiokafka's DefaultPartitioner: (murmur2(key) & 0x7fffffff) % partitions
            p = part_of[key] = (murmur2(key) & 0x7FFFFFFF) % n_parts
        return p

    def ready() -> bool:
        return bool(app.tables.recovery.completed.is_set()) and not app.rebalancing

    # The batch being filled: per request (connection, reply slot, decision line); records to publish.
    batch: list[tuple[_Conn, list[bytes | None], bytes]] = []
    out: Outbox = []
    auths: dict[int, list[bytes]] = {}
    decisions: dict[int, list[bytes]] = {}
    flushing = False
    enqueue = asyncio.Lock()  # FIFO: publishes enqueue in the order they were started

    async def publish(records: Outbox, auth_env: dict[int, list[bytes]], dec_env: dict[int, list[bytes]]) -> None:
        producer = app.producer._ensure_producer()  # noqa: SLF001 - the driver's aiokafka producer
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        loose = []
        for t, k, v, p in records:
            if p is None:
                loose.append((t, k, v))
            else:
                grouped.setdefault((t, p), []).append((k, v))
        for p, items in auth_env.items():
            grouped.setdefault((auth_topic, p), []).append((None, b"[" + b",".join(items) + b"]"))
        for p, items in dec_env.items():
            grouped.setdefault((decisions_topic, p), []).append((None, b"[" + b",".join(items) + b"]"))
        futs = []
        async with enqueue:  # send_batch may wait for a partition's queue: keep publishes in order
            await _enqueue(producer, grouped, loose, futs)
        if futs:
            await asyncio.gather(*futs)

    async def _enqueue(producer: Any, grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes]]],
                       loose: list[tuple[str, bytes | None, bytes]], futs: list[Any]) -> None:
        for (t, p), items in grouped.items():
            b = producer.create_batch()
            for k, v in items:
                if b.append(key=k, value=v, timestamp=None) is None:  # batch full: ship it, start another
                    futs.append(await producer.send_batch(b, t, partition=p))
                    b = producer.create_batch()
                    if b.append(key=k, value=v, timestamp=None) is None:
                        futs.append(await producer.send(t, v, key=k, partition=p))
            if b.record_count():
                futs.append(await producer.send_batch(b, t, partition=p))
        for t, k, v in loose:  # review-queue records (keyed by card, partitioned by the producer)
            futs.append(await producer.send(t, v, key=k))

    async def flush(reqs: list[tuple[_Conn, list[bytes | None], bytes]], records: Outbox,
                    auth_env: dict[int, list[bytes]], dec_env: dict[int, list[bytes]]) -> None:
        try:
            await publish(records, auth_env, dec_env)  # durable before we answer
        except Exception as exc:  # noqa: BLE001 - not published: the API falls back (degraded/Kafka)
            err = orjson.dumps({"error": "publish failed: " + _reason(exc)}) + b"\n"
            for _, slot, _ in reqs:
                slot[0] = err
        else:
            for _, slot, body in reqs:
                slot[0] = body
        for conn in {c for c, _, _ in reqs}:
            conn.drain()

    def one(conn: _Conn, line: bytes) -> None:
        nonlocal flushing
        slot: list[bytes | None] = [None]
        conn.slots.append(slot)
        try:
            auth = Authorisation.model_validate_json(line)
        except ValidationError as exc:
            slot[0] = orjson.dumps({"error": _reason(exc)}) + b"\n"
            return
        key = auth.card_id.encode()
        part = partition(key)
        if cfg.shard is not None and part % cfg.shard[1] != cfg.shard[0]:
            slot[0] = NOT_OWNER
            return
        if not ready():
            slot[0] = NOT_READY
            return
        scratch: list[bytes] = []
        try:
            body = decide_auth(_DirectEvent(part), auth, out, scratch)
        except Exception as exc:  # noqa: BLE001
            slot[0] = orjson.dumps({"error": _reason(exc)}) + b"\n"
            return
        if body is None:
            slot[0] = ALREADY
            return
        # The authorisation itself joins its partition too (warehouse sink, audit, replay); when the risk agent
        # reads it, the card's record already holds the tx id, so it has no second effect.
        auths.setdefault(part, []).append(line)
        decisions.setdefault(part, []).append(body)
        batch.append((conn, slot, body + b"\n"))
        if not flushing:
            flushing = True
            asyncio.get_running_loop().call_soon(_start_flush)

    def _start_flush() -> None:
        # Once per event-loop tick: everything decided in this tick goes out in one publish. Publishes of
        # successive ticks overlap; they enqueue in order (``enqueue`` lock) and the producer keeps a
        # partition's batches in order, so a card's changelog records reach Kafka in the order they were made.
        nonlocal batch, out, auths, decisions, flushing
        flushing = False
        reqs, records, auth_env, dec_env = batch, out, auths, decisions
        batch, out, auths, decisions = [], [], {}, {}
        if reqs:
            asyncio.ensure_future(flush(reqs, records, auth_env, dec_env))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Requests are decided in arrival order (the decision itself is synchronous); replies leave in that order.
        conn = _Conn(writer)
        rest = b""
        try:
            while data := await reader.read(65536):
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.strip():
                        one(conn, line.strip())
                conn.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @app.task
    async def direct_decisions() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", cfg.direct_port)
        # The worker's own consumer (Faust runs it in a thread) loops on empty fetches like any other: pace them.
        for _ in range(300):
            try:
                consumer = app.consumer._thread._ensure_consumer()  # noqa: SLF001
            except Exception:  # noqa: BLE001 - not started yet
                consumer = None
            if consumer is not None and pace_empty_fetches(consumer, 0.025):
                break
            await asyncio.sleep(1.0)
        async with server:
            await server.serve_forever()

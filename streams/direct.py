"""Direct decisions for the synchronous API, served from inside a risk worker.

The API (serving/risk.py) sends authorisations as JSON lines over TCP on 127.0.0.1 to the worker that owns the
card's partition; the worker decides each one at once in its own event loop with its own ``card_state`` table,
publishes the authorisation, the decision and the changelog record, and only then answers with the decision.

Publishing is grouped (a *group commit*) with one publish in flight at a time: the requests decided while a
publish is in flight go out together in the next one, as one produce batch per topic partition built with
``create_batch``/``send_batch`` (not one ``send`` per record). Per partition the authorisations and the
decisions go out as one envelope each (a JSON array, the same format the risk agent and the sink already read
on those topics), so when the risk agent reads the authorisations back it pays Faust's per-event cost once per
envelope, not once per authorisation (each is then a duplicate: the card's record already holds its tx id).
The changelog keeps one record per card key (the last). Publishes never overlap, so a card's changelog records
reach Kafka in the order its decisions were made, and a reply leaves only once the publish holding its
decision and its card's changelog record is acknowledged: no later decision can miss it. Replies on a
connection leave in request order.

The worker's consumer only reads back work it already decided (on the direct path), so its fetches are paced
(``READBACK_FETCH_INTERVAL_S``, every fetch, not only empty ones): a fetch per few records cost more CPU than
the decisions themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from fuelcard.events import Authorisation
from streams import topics as T
from streams.app import Outbox, StreamApp, StreamConfig, _reason

log = logging.getLogger(__name__)


class _DirectEvent:
    """Stands in for a Faust event on the direct path: only the partition is needed (for the changelog)."""

    class _Msg:
        __slots__ = ("partition",)

        def __init__(self, partition: int) -> None:
            self.partition = partition

    __slots__ = ("message",)

    def __init__(self, partition: int) -> None:
        self.message = self._Msg(partition)


class _Pending:
    """Requests decided since the last publish started: replies to send once published, and their records."""

    __slots__ = ("auths", "decisions", "out", "reqs")

    def __init__(self) -> None:
        self.reqs: list[tuple[_Conn, list[bytes | None], bytes]] = []  # connection, reply slot, reply line
        self.out: Outbox = []  # changelog (and review) records from decide_auth
        self.auths: dict[int, list[bytes]] = {}  # partition → authorisation lines
        self.decisions: dict[int, list[bytes]] = {}  # partition → decision bodies

    def add(self, conn: _Conn, slot: list[bytes | None], part: int, line: bytes, body: bytes) -> None:
        self.reqs.append((conn, slot, body + b"\n"))
        a = self.auths.get(part)
        if a is None:
            self.auths[part] = [line]
            self.decisions[part] = [body]
        else:
            a.append(line)
            self.decisions[part].append(body)


ENVELOPE_MAX_BYTES = 64 * 1024  # one envelope record stays far below the producer's and broker's size limits


def envelopes(items: list[bytes]) -> list[bytes]:
    """JSON arrays of the items (the envelope format the risk agent and the sink read), each at most
    ``ENVELOPE_MAX_BYTES`` unless a single item is larger."""
    out: list[bytes] = []
    start = size = 0
    for i, item in enumerate(items):
        if size and size + len(item) + 1 > ENVELOPE_MAX_BYTES:
            out.append(b"[" + b",".join(items[start:i]) + b"]")
            start, size = i, 0
        size += len(item) + 1
    out.append(b"[" + b",".join(items[start:]) + b"]")
    return out


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


_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``, aiokafka's ``partitioner.murmur2``), same results,
    about 3x cheaper in pure Python (whole little-endian words, fewer masks)."""
    length = len(data)
    m = 0x5BD1E995
    h = 0x9747B28C ^ length
    n4 = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:n4]):
        k = (k * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra >= 3:
        h ^= data[n4 + 2] << 16
    if extra >= 2:
        h ^= data[n4 + 1] << 8
    if extra >= 1:
        h = ((h ^ data[n4]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition aiokafka's (and Kafka's) default partitioner gives a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def pace_empty_fetches(consumer: Any, min_interval_s: float, *, all_fetches: bool = False) -> bool:
    """Make an aiokafka consumer wait ``min_interval_s`` between fetches that bring nothing (or between all
    fetches, with ``all_fetches``). True if installed.

    noida-db answers an empty fetch at once instead of holding it for ``fetch_max_wait_ms``, so an idle
    consumer loops about 400 fetches/s and burns about a quarter of a core in aiokafka's pure-Python protocol
    code (measured: 0.23 cores per idle consumer with ``fetch_max_wait_ms`` 20 or 500). This restores the wait
    the broker should have done; a fetch that brings records is not delayed (unless ``all_fetches``).
    """
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
            try:
                await asyncio.sleep(left)
            except asyncio.CancelledError:
                # The consumer is closing: aiokafka's Fetcher.close() cancels and then awaits its fetch tasks
                # without expecting them to raise. The fetch itself is complete; only the pause is cut short.
                return result
        return result

    paced._paced = True  # type: ignore[attr-defined]
    fetcher._proc_fetch_request = paced
    return True


# GIL switch interval of a worker that serves direct decisions (default 5 ms). Measured, quiet machine, 500 req/s,
# one 20 s run each: p50 16.5 → 10.8 ms, p99 93 → 46 ms, degraded 26 → 13 %, worker CPU +9 %.
GIL_SWITCH_INTERVAL_S = 0.0005

# Fetch pacing of a worker that serves direct decisions (every fetch). Authorisations streamed through Kafka by
# other producers wait up to this much longer before their agent sees them.
READBACK_FETCH_INTERVAL_S = 0.02

NOT_OWNER = b'{"error": "not the owner of this card"}\n'
NOT_READY = b'{"error": "not ready"}\n'
ALREADY = b'{"error": "already decided"}\n'


def direct_server(app: Any, sa: StreamApp, cfg: StreamConfig,
                  decide_auth: Callable[[Any, Authorisation, Outbox, list[bytes] | None], bytes | None]) -> None:
    """Serve direct decisions (JSON lines over TCP on 127.0.0.1) from inside the worker."""
    n_parts = T.AUTHORISATIONS.partitions
    auth_topic = T.AUTHORISATIONS.name(cfg.prefix)
    decisions_topic = T.DECISIONS.name(cfg.prefix)
    part_of: dict[bytes, int] = {}  # card key → partition (murmur2 in pure Python costs more than a decision's I/O)

    def partition(key: bytes) -> int:
        p = part_of.get(key)
        if p is None:
            if len(part_of) > 1_000_000:
                part_of.clear()
            p = part_of[key] = kafka_partition(key, n_parts)  # aiokafka's DefaultPartitioner
        return p

    events = [_DirectEvent(p) for p in range(n_parts)]
    scratch: list[bytes] = []  # decide_auth appends the body here too (we take it from its return value)

    def ready() -> bool:
        return bool(app.tables.recovery.completed.is_set()) and not app.rebalancing

    # Group commit, one publish in flight at a time: the requests decided while a publish is in flight wait
    # in ``pending`` and go out together in the next one, as one envelope per partition — not one publish per
    # event-loop tick. aiokafka's sender keeps one produce request in flight per broker and takes one record
    # batch per partition per request, so per-tick publishes of a busy worker queued behind each other
    # (a second batch for a partition even blocked the enqueueing of every later one) and each carried a
    # one-item envelope that the risk agent then read back at Faust's full per-event cost.
    pending = _Pending()
    inflight = False
    kick_scheduled = False

    def changelog_last(records: Outbox) -> Outbox:
        """Records of a publish with one changelog record per table key (the last one: a compacted changelog
        keeps only that, and recovery applies them in order anyway); effects keep their order."""
        last: dict[tuple[str, bytes | None], int] = {}
        for i, (t, k, _, p) in enumerate(records):
            if p is not None:
                last[t, k] = i
        if len(last) == sum(1 for r in records if r[3] is not None):
            return records
        return [r for i, r in enumerate(records) if r[3] is None or last[r[0], r[1]] == i]

    async def publish(records: Outbox, auth_env: dict[int, list[bytes]], dec_env: dict[int, list[bytes]]) -> None:
        producer = app.producer._ensure_producer()  # noqa: SLF001 - the driver's aiokafka producer
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        loose = []
        for t, k, v, p in changelog_last(records):
            if p is None:
                loose.append((t, k, v))
            else:
                grouped.setdefault((t, p), []).append((k, v))
        for topic, env in ((auth_topic, auth_env), (decisions_topic, dec_env)):
            for p, items in env.items():
                grouped.setdefault((topic, p), []).extend((None, e) for e in envelopes(items))
        futs = []
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
        if futs:
            await asyncio.gather(*futs)

    trace = cfg.trace

    async def flush(batch: _Pending) -> None:
        nonlocal inflight
        t0 = time.perf_counter()
        try:
            await publish(batch.out, batch.auths, batch.decisions)  # durable before we answer
            if trace:
                log.warning("trace direct publish requests=%d partitions=%d publish_ms=%.1f", len(batch.reqs),
                            len(batch.auths), (time.perf_counter() - t0) * 1000)
        except Exception as exc:  # noqa: BLE001 - not published: the API falls back (degraded/Kafka)
            err = orjson.dumps({"error": "publish failed: " + _reason(exc)}) + b"\n"
            for _, slot, _ in batch.reqs:
                slot[0] = err
        else:
            for _, slot, body in batch.reqs:
                slot[0] = body
        finally:
            inflight = False
            if pending.reqs:  # decided while this publish was in flight: the next publish, at once
                kick()
        for conn in {c for c, _, _ in batch.reqs}:
            conn.drain()

    def kick() -> None:
        # Start a publish of everything pending unless one is in flight (it starts the next one when it ends).
        # Publishes never overlap, so a card's changelog records reach Kafka in the order they were made.
        nonlocal pending, inflight, kick_scheduled
        kick_scheduled = False
        if inflight or not pending.reqs:
            return
        inflight = True
        batch, pending = pending, _Pending()
        asyncio.ensure_future(flush(batch))

    def one(conn: _Conn, line: bytes) -> None:
        nonlocal kick_scheduled
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
        scratch.clear()
        try:
            body = decide_auth(events[part], auth, pending.out, scratch)
        except Exception as exc:  # noqa: BLE001
            slot[0] = orjson.dumps({"error": _reason(exc)}) + b"\n"
            return
        if body is None:
            slot[0] = ALREADY
            return
        # The authorisation itself joins its partition too (warehouse sink, audit, replay); when the risk agent
        # reads it, the card's record already holds the tx id, so it has no second effect.
        pending.add(conn, slot, part, line, body)
        if not inflight and not kick_scheduled:  # once per event-loop tick: the whole tick joins one publish
            kick_scheduled = True
            asyncio.get_running_loop().call_soon(kick)

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
        # Faust's consumer runs in its own thread: with the default 5 ms GIL switch interval the event loop that
        # answers direct requests waited up to 5 ms for the GIL each time that thread was busy (decoding fetches).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        # The worker's own consumer (Faust runs it in a thread): pace its fetches (see READBACK_FETCH_INTERVAL_S).
        for _ in range(300):
            try:
                consumer = app.consumer._thread._ensure_consumer()  # noqa: SLF001
            except Exception:  # noqa: BLE001 - not started yet
                consumer = None
            if consumer is not None and pace_empty_fetches(consumer, READBACK_FETCH_INTERVAL_S, all_fetches=True):
                break
            await asyncio.sleep(1.0)
        async with server:
            await server.serve_forever()

"""The Faust app of the speed layer: topics, tables and agents, built by :func:`create_app`.

Agents (all thin adapters over pure cores; none of them ever crashes on a bad event):

* **risk** — ``authorisations`` (keyed by card) → per-card state in the ``card_state`` table → the risk
  engine → ``decisions`` (every decision) and ``review`` (review-level ones: the manual-review queue).
  Events are taken in small batches (``stream.take_events``) to amortise Faust's per-call overheads; each
  table write goes to the changelog partition of *its own* event (not the batch's last one).
  Redelivered authorisations (same tx_id already decided for the card) have no second effect.
* **points router** — ``payments`` (Capture/Cancel/Refund, keyed by card) and ``redemptions`` (keyed by member)
  → points requests keyed by points account (family pool or member) on ``points-requests``.
* **points** — ``points-requests`` → ``points_accounts`` table (pure :mod:`fuelcard.points` core, idempotent by
  request id) → ledger movements on ``points-ledger``.
* **sink** — authorisations, payments, recharges, decisions and ledger lines → the warehouse in micro-batches
  (idempotent there: rows carry their event id).

Malformed or schema-invalid events go to ``dead-letters`` with the reason and the raw payload.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust
import orjson
from pydantic import TypeAdapter, ValidationError

from fuelcard import points as pts
from fuelcard.events import Authorisation, Cancel, Capture, Decision, Outcome, Refund
from fuelcard.events import PointsRedemption as Redemption
from streams import topics as T
from streams.directory import CardDirectory
from streams.engine import CardRecord, RiskEngine, dump_record, load_record
from streams.sinks import SOURCE_VALIDATED_KINDS, NullSink, Sink, validate_row

log = logging.getLogger(__name__)

_AUTH_LIST: TypeAdapter[list[Authorisation]] = TypeAdapter(list[Authorisation])
_PAYMENT_KINDS: dict[str, type] = {"capture": Capture, "cancel": Cancel, "refund": Refund}


@dataclass
class StreamConfig:
    """Everything a worker needs; built by entry points from :class:`fuelcard.settings.Settings`."""

    broker_url: str
    prefix: str = "fuelcard"
    app_id: str = "fuelcard-stream"
    engine: RiskEngine | None = None
    directory: CardDirectory = field(default_factory=CardDirectory)
    sink: Sink = field(default_factory=NullSink)
    agents: frozenset[str] = frozenset({"risk", "points", "sink"})
    take_max: int = 256
    take_within_s: float = 0.004
    sink_batch: int = 2000
    sink_within_s: float = 1.0
    points_policy: pts.PointsPolicy = pts.DEFAULT_POLICY
    broker_credentials: Any = None
    producer_linger_s: float = 0.0
    trace: bool = False
    # Static partition ownership (index, count): this worker decides only authorisations of partitions p with
    # p % count == index. Used instead of a shared consumer group on brokers whose group rebalancing does not
    # work with several members (noida-db 0.2.3); every worker is then its own group and app id.
    shard: tuple[int, int] | None = None
    # Direct decisions for the synchronous API (see serving/risk.py): this worker answers authorisations of the
    # partitions it owns on 127.0.0.1:direct_port (one JSON line in, one JSON line out), deciding them in its
    # own event loop with its own table state and publishing the authorisation, decision and changelog before
    # it answers. None = only the Kafka path.
    direct_port: int | None = None
    # Garbage collector: after start-up (first batch), freeze every object alive then (Faust, pydantic, the
    # model: never scanned again) and collect the young generation less often (``gc_threshold0``).
    gc_freeze: bool = True
    gc_threshold0: int = 20_000
    # Authorisations dated more than this many seconds ahead of the processing time are dead-lettered
    # ("far-future timestamp") instead of decided; None disables the check (e.g. replaying a future simulation).
    max_future_skew_s: float | None = 24 * 3600.0
    # noida-db answers an empty fetch at once instead of holding it for fetch_max_wait_ms, so Faust's consumer
    # thread loops on empty fetches between records (~400/s; 0.25 core per idle worker, more on a quiet machine:
    # docs/STREAMING.md "Idle fetch loop"). After an empty fetch the consumer waits this long before the next
    # one (a fetch that brings records is never delayed); 0 = off. Default from FUELCARD_STREAM_FETCH_PACE_MS.
    fetch_pace_s: float = field(default_factory=lambda: float(os.environ.get("FUELCARD_STREAM_FETCH_PACE_MS",
                                                                             "5")) / 1000)
    # Compression of the record batches the worker produces (decisions, changelog, ledger, ...); consumers
    # decompress transparently. noida-db keeps batches as they come and its autosave thread re-serialises every
    # retained byte about once a second: gzip cut that 0.23 -> 0.06 core for the same records, but aiokafka's gzip
    # costs the clients about as much (docs/STREAMING.md "autosave"). Default from FUELCARD_STREAM_COMPRESSION
    # (none).
    compression: str | None = field(default_factory=T.compression_from_env)


class FarFutureTimestamp(ValueError):
    """An event's timestamp lies further ahead of the processing time than the configured skew allows."""


def dead_letter_payload(*, reason: str, raw: bytes | None, topic: str, partition: int | None,
                        offset: int | None, agent: str) -> bytes:
    """The dead-letter record: why, where from, and the raw payload (UTF-8 text and exact base64)."""
    raw = raw or b""
    return orjson.dumps({
        "reason": reason[:2000], "agent": agent, "source_topic": topic, "partition": partition, "offset": offset,
        "raw": raw.decode("utf-8", "replace"), "raw_b64": base64.b64encode(raw).decode(),
        "at": time.time(),
    })


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        errs = exc.errors()[:3]
        if any(e.get("type") in ("json_invalid", "json_type") for e in errs):
            return f"malformed: {errs[0]['msg']}"
        return "schema-invalid: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs)
    if isinstance(exc, FarFutureTimestamp):
        return f"schema-invalid: ts: far-future timestamp ({exc})"
    if isinstance(exc, orjson.JSONDecodeError | UnicodeDecodeError):
        return f"malformed: {exc}"
    return f"processing error: {type(exc).__name__}: {exc}"


def points_request_to_json(req: pts.PointsRequest) -> bytes:
    """Wire form of a points request."""
    d = {k: getattr(req, k) for k in req.__dataclass_fields__}
    d["ts"] = req.ts.isoformat()
    return orjson.dumps(d)


def points_request_from_json(raw: bytes) -> pts.PointsRequest:
    """Inverse of :func:`points_request_to_json` (raises on anything malformed)."""
    d = orjson.loads(raw)
    if not isinstance(d, dict) or d.get("kind") not in ("accrual", "refund", "cancel", "redemption"):
        raise ValueError("not a points request")
    ts = datetime.fromisoformat(d["ts"])
    if ts.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    return pts.PointsRequest(**{**d, "ts": ts})


def payment_to_points_request(event: Any, directory: CardDirectory) -> pts.PointsRequest | None:
    """Capture → accrual, Refund → pro-rata reversal, Cancel → full reversal; keyed to the points account."""
    if isinstance(event, Capture):
        h = directory.holder_of_card(event.card_id, event.member_id)
        return pts.PointsRequest(kind="accrual", request_id=event.tx_id, tx_id=event.tx_id, ts=event.ts,
                                 account_id=directory.account_of_card(event.card_id, event.member_id),
                                 member_id=h.member_id, tier=h.tier, product=str(event.product),
                                 amount_fen=event.amount_fen)
    if isinstance(event, Refund):
        return pts.PointsRequest(kind="refund", request_id=event.refund_id, tx_id=event.tx_id, ts=event.ts,
                                 account_id=directory.account_of_card(event.card_id),
                                 member_id=directory.holder_of_card(event.card_id).member_id,
                                 amount_fen=event.amount_fen)
    if isinstance(event, Cancel):
        return pts.PointsRequest(kind="cancel", request_id=event.tx_id, tx_id=event.tx_id, ts=event.ts,
                                 account_id=directory.account_of_card(event.card_id),
                                 member_id=directory.holder_of_card(event.card_id).member_id)
    if isinstance(event, Redemption):
        h = directory.holder_of_member(event.member_id)
        return pts.PointsRequest(kind="redemption", request_id=event.redemption_id, ts=event.ts,
                                 account_id=h.account_id, member_id=event.member_id, points=event.points,
                                 item=event.item)
    return None


def parse_payment(raw: bytes) -> Capture | Cancel | Refund:
    """Parse a payments-topic record by its ``kind``."""
    d = orjson.loads(raw)
    if not isinstance(d, dict):
        raise ValueError("payload is not a JSON object")
    model = _PAYMENT_KINDS.get(d.get("kind"))  # type: ignore[arg-type]
    if model is None:
        raise ValueError(f"unknown payment kind {d.get('kind')!r}")
    return model.model_validate(d)


@dataclass
class StreamApp:
    """The built app with handles on its topics, tables and agents (for workers, tests and the demo)."""

    app: faust.App
    config: StreamConfig
    topics: dict[str, faust.TopicT]
    card_state: Any
    points_accounts: Any
    agents: dict[str, Any]
    stats: dict[str, int]
    on_decision: list[Callable[[Decision], None]] = field(default_factory=list)
    publish: Callable[[Outbox], Awaitable[None]] | None = None


Outbox = list[tuple[str, bytes | None, bytes, int | None]]


def _table_put(table: Any, event: Any, key: bytes, value: bytes, out: Outbox) -> None:
    """Write a table key and queue its changelog record for the partition of the event that caused it.

    ``table[key] = value`` would use the *current* event, which inside a batch is the batch's last event (a
    different partition for most keys); recovery would then restore the key on the wrong worker.
    """
    table.data[key] = value
    out.append((table.changelog_topic.get_topic_name(), key, value, event.message.partition))


@contextlib.contextmanager
def held_unless_delivered(batch: Any) -> Iterator[None]:
    """Around an agent's handling of one batch: never acknowledge its events if the body does not finish.

    Faust's ``take_events`` acks every event of a batch in its ``finally`` — also when the agent body raised or
    was cancelled (SIGTERM from the supervisor's watchdog, a rebalance, a failed publish) before its decisions,
    ledger lines or rows were delivered; the worker then commits past them on stop and they are never processed
    again (lost effects). Marking the messages as acked here turns that ack into a no-op and keeps them out of
    the consumer's acked offsets, so the committed offset stays *before* them: the next worker (or the
    watchdog's restart) reads them again, and every effect is idempotent.

    The batch also holds one reference on each message while the body runs: ``Stream.on_stop`` closes the
    ``take_events`` generator — running that ``finally`` — while the body may still await ``publish`` (a stopped
    stream), and that ack must not be the final one. A body that finishes releases its reference (``event.ack``:
    the final ack if the generator already ran its own); tests/faults/test_interrupted_batch.py.
    """
    for event in batch:
        event.message.incref()
    try:
        yield
    except BaseException:  # raised or cancelled before every effect was delivered
        for event in batch:
            event.message.acked = True
        raise
    for event in batch:
        event.ack()


def shard_assignor(shard: tuple[int, int], topics: frozenset[str]) -> type:
    """A Faust partition assignor that gives this worker only its own partitions (``p % count == index``) of
    ``topics`` (the authorisations topic and the card_state changelog).

    With static shards every worker is the only member of its own group, so Faust's assignor would give it
    every partition: it would fetch, deserialise and run its stream machinery over the other workers' records
    only to skip them (half the records with two workers, and as many fetches again on the broker).
    """
    from faust.assignor import PartitionAssignor

    index, count = shard

    class ShardAssignor(PartitionAssignor):  # type: ignore[misc]
        def _protocol_assignments(self, assignments: Any, *args: Any, **kwargs: Any) -> Any:
            for a in assignments.values():
                for group in (a.actives, a.standbys):
                    for t in topics & group.keys():
                        group[t] = [p for p in group[t] if p % count == index]
            return super()._protocol_assignments(assignments, *args, **kwargs)

    return ShardAssignor


def _trace_gc_pauses(min_ms: float = 5.0) -> None:
    """Log every garbage collection that stops the worker for ``min_ms`` or more (``trace`` mode)."""
    started: list[float] = [0.0]

    def cb(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if ms >= min_ms:
            log.warning("trace gc generation=%d pause_ms=%.1f collected=%d tracked=%d", info["generation"], ms,
                        info["collected"], len(gc.get_objects(info["generation"])))

    gc.callbacks.append(cb)


def create_app(cfg: StreamConfig) -> StreamApp:
    """Build the Faust app with the agents named in ``cfg.agents``."""
    from streams.engine import load_engine

    engine: RiskEngine = cfg.engine or load_engine()
    app = faust.App(
        cfg.app_id,
        broker=cfg.broker_url,
        broker_credentials=cfg.broker_credentials,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=T.HOT_PARTITIONS,
        topic_replication_factor=1,
        topic_allow_declare=False,  # topics are created up front by streams.topics.ensure_topics
        topic_disable_leader=True,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_linger=cfg.producer_linger_s,
        producer_compression_type=cfg.compression,
        table_standby_replicas=0,
        stream_buffer_maxsize=8192,
        broker_commit_every=5000,
        broker_commit_interval=1.0,
        **({"PartitionAssignor": shard_assignor(
            cfg.shard, frozenset({T.AUTHORISATIONS.name(cfg.prefix), f"{cfg.app_id}-card_state-changelog"}))}
           if cfg.shard is not None else {}),
    )

    def topic(spec: T.TopicSpec) -> faust.TopicT:
        return app.topic(spec.name(cfg.prefix), key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=spec.partitions, retention=spec.retention_ms / 1000)

    tps = {s.suffix: topic(s) for s in T.ALL_TOPICS}

    def raw_table(name: str, partitions: int) -> Any:
        schema = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        table = app.Table(name, default=None, schema=schema, key_type=bytes, value_type=bytes,
                          partitions=partitions)
        # Faust derives table serializers from the types ("json" for bytes); our values are opaque bytes.
        table.key_serializer = "raw"
        table.value_serializer = "raw"
        return table

    card_state = raw_table("card_state", T.TABLES["card_state"])
    points_accounts = raw_table("points_accounts", T.TABLES["points_accounts"])
    stats: dict[str, int] = {"decided": 0, "duplicates": 0, "dead_letters": 0, "points_movements": 0,
                             "sunk": 0}
    sa = StreamApp(app, cfg, tps, card_state, points_accounts, {}, stats)
    dlq = T.DEAD_LETTERS.name(cfg.prefix)

    async def publish(out: Outbox) -> None:
        # Straight to the driver's producer: Faust's send_soon buffer publishes one message at a time, and
        # Topic.send defers to the source event's ack. We wait for delivery before the batch is acked, so a
        # committed offset always means its decisions, changelog and ledger records are in Kafka.
        # The driver's aiokafka producer itself: Faust's wrapper adds sensor bookkeeping per message.
        # Records with a known partition (changelog, envelopes) are appended to one record batch per topic
        # partition and submitted whole (``send_batch``): a fraction of ``send``'s per-message cost.
        # Effects (decisions, review, ledger lines, points requests, dead letters) are delivered *before* the
        # table changelog records are submitted: a batch interrupted in between (SIGTERM, broker restart, a
        # failed delivery) must never leave a state that says "seen" for an effect that is not in Kafka — the
        # replay would take the event for a duplicate and its effect would be lost. The other way round the
        # replay only repeats an effect, which is idempotent downstream.
        changelog = [r for r in out if r[0].endswith("-changelog")]
        if changelog:
            effects = [r for r in out if not r[0].endswith("-changelog")]
            if effects:
                await _submit(effects)
            await _submit(changelog)
        else:
            await _submit(out)
        out.clear()

    async def _submit(out: Outbox) -> None:
        producer = app.producer._ensure_producer()  # noqa: SLF001
        futs = []
        batches: dict[tuple[str, int], Any] = {}
        for t, k, v, p in out:
            if p is None:
                futs.append(await producer.send(t, v, key=k))
                continue
            b = batches.get((t, p))
            if b is not None and b.append(timestamp=None, key=k, value=v) is not None:
                continue
            if b is not None:  # full: submit it, start the next one
                futs.append(await producer.send_batch(b, t, partition=p))
            b = batches[t, p] = producer.create_batch()
            if b.append(timestamp=None, key=k, value=v) is None:  # larger than a whole batch: on its own
                del batches[t, p]
                futs.append(await producer.send(t, v, key=k, partition=p))
        for (t, p), b in batches.items():
            futs.append(await producer.send_batch(b, t, partition=p))
        if futs:
            await asyncio.gather(*futs)

    sa.publish = publish

    def dead_letter(event: Any, exc: BaseException, agent: str, out: Outbox, raw: bytes | None = None) -> None:
        stats["dead_letters"] += 1
        msg = event.message
        reason = _reason(exc)
        if raw is None:
            value = event.value
            if value is None:  # a null record value (tombstone / empty payload): nothing to keep
                raw, reason = b"", "malformed: null value"
            else:
                raw = value if isinstance(value, bytes) else str(value).encode()
        out.append((dlq, msg.key if isinstance(msg.key, bytes) else None,
                    dead_letter_payload(reason=reason, raw=raw, topic=msg.topic, partition=msg.partition,
                                        offset=msg.offset, agent=agent), None))

    decisions, review = T.DECISIONS.name(cfg.prefix), T.REVIEW.name(cfg.prefix)

    # No cache of decoded card records: the table holds bytes only (~7 µs to decode one), because hundreds of
    # thousands of live CardState objects (each a dozen lists) made every full GC collection take seconds —
    # that was the stream's p99 tail (docs/STREAMING.md, "Latency tail").

    skew = cfg.max_future_skew_s

    def decide_auth(event: Any, auth: Authorisation, out: Outbox, bodies: list[bytes] | None) -> bytes | None:
        if skew is not None:
            ahead = auth.ts.timestamp() - time.time()
            if ahead > skew:
                raise FarFutureTimestamp(f"{auth.ts.isoformat()} is {ahead / 3600:.0f} h ahead of processing time, "
                                         f"more than the allowed {skew / 3600:g} h")
        key = auth.card_id.encode()
        rec = load_record(card_state.data.get(key), engine)
        if rec is not None and rec.seen(auth.tx_id):
            stats["duplicates"] += 1  # redelivery: the effect already happened
            return None
        state, decision = engine.decide(rec.state if rec else None, auth)
        new = (rec or CardRecord(None)).advance(state, auth.tx_id)
        _table_put(card_state, event, key, dump_record(new, engine), out)
        body = decision.model_dump_json().encode()
        if bodies is None:
            out.append((decisions, key, body, None))
        else:
            bodies.append(body)
        if decision.outcome == Outcome.REVIEW:
            out.append((review, key, body, None))
        stats["decided"] += 1
        for cb in sa.on_decision:
            cb(decision)
        return body

    def decide_event(event: Any, out: Outbox) -> None:
        """One record: a single authorisation (JSON object) or an envelope (JSON array) of authorisations that
        the producer grouped by partition. Decisions of an envelope go out as one envelope on the same
        partition number of the decisions topic; a bad item is dead-lettered alone."""
        raw = event.value
        if raw[:1] != b"[":
            decide_auth(event, Authorisation.model_validate_json(raw), out, None)
            return
        bodies: list[bytes] = []
        try:
            auths: list[Any] = _AUTH_LIST.validate_json(raw)  # whole envelope in one pass (fast path)
        except ValidationError:
            auths = orjson.loads(raw)  # some item is bad: validate one by one below
        for item in auths:
            try:
                auth = item if isinstance(item, Authorisation) else Authorisation.model_validate(item)
                decide_auth(event, auth, out, bodies)
            except Exception as exc:  # noqa: BLE001 - one bad item must not lose the others
                bad = orjson.dumps(item) if not isinstance(item, Authorisation) else item.model_dump_json().encode()
                dead_letter(event, exc, "risk", out, raw=bad)
        if bodies:
            out.append((decisions, None, b"[" + b",".join(bodies) + b"]", event.message.partition))

    if cfg.trace:
        _trace_gc_pauses()

    if cfg.fetch_pace_s > 0 and not cfg.direct_port:  # a direct-serving worker paces its consumer itself
        @app.task
        async def pace_fetches() -> None:
            from streams.direct import pace_empty_fetches

            for _ in range(600):  # the consumer (in Faust's consumer thread) exists once the app has started
                try:
                    consumer = app.consumer._thread._ensure_consumer()  # noqa: SLF001
                except Exception:  # noqa: BLE001 - not started yet
                    consumer = None
                if consumer is not None:
                    pace_empty_fetches(consumer, cfg.fetch_pace_s)
                    return
                await asyncio.sleep(0.5)

    if "risk" in cfg.agents:
        @app.agent(tps[T.AUTHORISATIONS.suffix], name="risk")
        async def risk(stream: Any) -> Any:
            out: Outbox = []
            shard = cfg.shard
            started = False
            async for batch in stream.take_events(cfg.take_max, within=cfg.take_within_s):
                with held_unless_delivered(batch):
                    t_in = time.time()
                    if not started and cfg.gc_freeze:
                        started = True
                        gc.collect()
                        gc.freeze()  # start-up objects (Faust, pydantic, the model) are never scanned again
                        gc.set_threshold(cfg.gc_threshold0, *gc.get_threshold()[1:])
                    for event in batch:
                        if shard is not None and event.message.partition % shard[1] != shard[0]:
                            continue  # another worker owns this partition
                        try:
                            decide_event(event, out)
                        except Exception as exc:  # noqa: BLE001 - an agent never crashes on one event
                            dead_letter(event, exc, "risk", out)
                    t_done = time.time()
                    await sa.publish(out)
                    if cfg.trace:
                        lag = (t_in - batch[0].message.timestamp) * 1000
                        log.warning("trace batch=%d lag_in_ms=%.1f decide_ms=%.1f publish_ms=%.1f", len(batch), lag,
                                    (t_done - t_in) * 1000, (time.time() - t_done) * 1000)
                yield len(batch)

        sa.agents["risk"] = risk

        if cfg.direct_port:
            from streams.direct import direct_server

            direct_server(app, sa, cfg, decide_auth)

    if "points" in cfg.agents:
        requests_topic, ledger = tps[T.POINTS_REQUESTS.suffix], T.POINTS_LEDGER.name(cfg.prefix)
        requests_name = T.POINTS_REQUESTS.name(cfg.prefix)

        @app.agent(app.topic(T.PAYMENTS.name(cfg.prefix), T.REDEMPTIONS.name(cfg.prefix), key_type=bytes,
                             value_type=bytes, key_serializer="raw", value_serializer="raw"),
                   name="points_router")
        async def points_router(stream: Any) -> Any:
            out: Outbox = []
            async for batch in stream.take_events(cfg.take_max, within=cfg.take_within_s):
                with held_unless_delivered(batch):
                    for event in batch:
                        try:
                            if event.message.topic == T.REDEMPTIONS.name(cfg.prefix):
                                ev: Any = Redemption.model_validate_json(event.value)
                            else:
                                ev = parse_payment(event.value)
                            req = payment_to_points_request(ev, cfg.directory)
                            if req is not None:
                                out.append((requests_name, req.account_id.encode(), points_request_to_json(req), None))
                        except Exception as exc:  # noqa: BLE001
                            dead_letter(event, exc, "points_router", out)
                    await sa.publish(out)
                yield len(batch)

        @app.agent(requests_topic, name="points")
        async def points(stream: Any) -> Any:
            out: Outbox = []
            async for batch in stream.take_events(cfg.take_max, within=cfg.take_within_s):
                with held_unless_delivered(batch):
                    for event in batch:
                        try:
                            req = points_request_from_json(event.value)
                            key = req.account_id.encode()
                            raw = points_accounts.data.get(key)
                            state = pts.state_from_dict(orjson.loads(raw)) if raw else None
                            new, moves = pts.apply(state, req, cfg.points_policy)
                            if new is not state:
                                _table_put(points_accounts, event, key, orjson.dumps(pts.state_to_dict(new)), out)
                            for m in moves:
                                out.append((ledger, key, orjson.dumps(m.to_dict()), None))
                            stats["points_movements"] += len(moves)
                        except Exception as exc:  # noqa: BLE001
                            dead_letter(event, exc, "points", out)
                    await sa.publish(out)
                yield len(batch)

        sa.agents["points_router"] = points_router
        sa.agents["points"] = points

    if "sink" in cfg.agents:
        sink_suffixes = [T.AUTHORISATIONS, T.PAYMENTS, T.RECHARGES, T.REDEMPTIONS, T.DECISIONS, T.POINTS_LEDGER]
        kind_of = {s.name(cfg.prefix): s.suffix for s in sink_suffixes}

        @app.agent(app.topic(*kind_of, key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw"), name="sink")
        async def sink(stream: Any) -> Any:
            out: Outbox = []
            async for batch in stream.take_events(cfg.sink_batch, within=cfg.sink_within_s):
                with held_unless_delivered(batch):
                    groups: dict[str, list[tuple[dict[str, Any], Any, bool]]] = {}
                    for event in batch:
                        kind = kind_of[event.message.topic]
                        try:
                            row = orjson.loads(event.value)
                        except Exception:  # noqa: BLE001, S112 - the source agents dead-letter bad events already
                            if kind not in SOURCE_VALIDATED_KINDS:
                                dead_letter(event, ValueError("not JSON"), "sink", out)
                            continue
                        is_env = isinstance(row, list)  # envelopes carry several rows
                        for r in (row if is_env else [row]):
                            try:
                                if not isinstance(r, dict):
                                    raise ValueError("row is not a JSON object")
                                validate_row(kind, r, max_future_skew_s=skew)
                            except Exception as exc:  # noqa: BLE001
                                if kind not in SOURCE_VALIDATED_KINDS:
                                    dead_letter(event, exc, "sink", out, raw=orjson.dumps(r) if is_env else None)
                                continue
                            groups.setdefault(kind, []).append((r, event, is_env))
                    # authorisations first: payments and decisions of the same batch take their time and station
                    for kind in sorted(groups, key=lambda k: k != T.AUTHORISATIONS.suffix):
                        await write_rows(kind, groups[kind], out)
                    await sa.publish(out)
                    # Only now (every row written or dead-lettered) may the batch be acknowledged.
                yield len(batch)

        async def write_rows(kind: str, items: list[tuple[dict[str, Any], Any, bool]], out: Outbox) -> None:
            """Write rows until they are stored: while the sink is unreachable retry with capped backoff (never
            acknowledge unwritten rows); if it is reachable the rows are at fault: split the batch, and
            dead-letter a single row that keeps failing."""
            healthy = getattr(cfg.sink, "healthy", None)
            delay, failures = 0.25, 0
            while True:
                try:
                    cfg.sink.write(kind, [r for r, _, _ in items])
                    stats["sunk"] += len(items)
                    return
                except Exception as exc:  # noqa: BLE001
                    failures += 1
                    up = healthy() if healthy is not None else failures >= 3
                    if up and len(items) > 1:
                        mid = len(items) // 2
                        await write_rows(kind, items[:mid], out)
                        await write_rows(kind, items[mid:], out)
                        return
                    if up and failures >= 3:
                        log.error("sink: dead-lettering a %s row the warehouse rejects: %s", kind, exc)
                        r, event, is_env = items[0]
                        dead_letter(event, exc, "sink", out, raw=orjson.dumps(r) if is_env else None)
                        return
                    log.warning("sink write of %d %s rows failed (attempt %d, retry in %.1fs): %s", len(items), kind,
                                failures, delay, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

        sa.agents["sink"] = sink

    return sa


# Re-exported for wiring convenience.
__all__ = ["FarFutureTimestamp", "StreamApp", "StreamConfig", "create_app", "dead_letter_payload",
           "payment_to_points_request", "points_request_from_json", "points_request_to_json"]

"""Producer/feeder and decision collector: stream events into Kafka at a rate and watch decisions come back.

Used by the demo (stream a simulated day), ``fuelcard stream feed``, the stream benchmark and the integration
tests. Authorisations are keyed by card token; the collector reads every partition of the decisions topic
without a consumer group (manual assignment), so it never suffers from group-membership defects.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from fuelcard.events import Authorisation, Product


@dataclass(frozen=True)
class Outgoing:
    """One record to produce."""

    topic: str
    key: bytes
    value: bytes
    tx_id: str | None = None


_GRID = 25  # stations on a 25 x 20 grid over 2 degrees of latitude and longitude (~9 km apart)
_STATIONS = 500


def _station_pos(s: int) -> tuple[float, float]:
    return 30 + (s % _GRID) * 0.08, 120 + (s // _GRID) * 0.1


def _draws(n: int, cards: int, seed: int) -> Iterator[tuple[str, str, int, str, int, float, float]]:
    """(card, station, station index, product, amount, lat, lon) per authorisation.

    Each card fills at its home station or one of the grid neighbours (like real cards: a handful of nearby
    stations), and a station is always at the same place; so the rules fire about as often as on simulated
    days (a card jumping across the map between random positions made one decision in ten a decline).
    """
    rng = random.Random(seed)
    products = [str(p.value) for p in (Product.GASOLINE_92, Product.GASOLINE_95, Product.DIESEL_0, Product.SHOP,
                                       Product.CAR_WASH)]
    for _ in range(n):
        c = rng.randrange(cards)
        home = (c * 7919) % _STATIONS
        row = min(_GRID - 1, max(0, home % _GRID + rng.randrange(-1, 2)))
        col = min(_STATIONS // _GRID - 1, max(0, home // _GRID + rng.randrange(-1, 2)))
        s = col * _GRID + row
        lat, lon = _station_pos(s)
        yield f"c{c}", f"S{s:04d}", s, rng.choice(products), rng.randrange(2_000, 60_000), lat, lon


def synthetic_authorisations(n: int, *, cards: int = 20_000, seed: int = 7, start: datetime | None = None,
                             tx_prefix: str = "b", step: timedelta = timedelta(milliseconds=50),
                             ) -> Iterator[Authorisation]:
    """Plausible authorisations over ``cards`` cards (for benchmarks when no simulated day is at hand), ``step``
    of event time apart (the network's pace in event time; a card fills every ``cards * step`` on average)."""
    t = start or datetime(2026, 5, 1, tzinfo=UTC)
    for i, (card, station, _, product, amount, lat, lon) in enumerate(_draws(n, cards, seed)):
        yield Authorisation(tx_id=f"{tx_prefix}{i}", ts=t + step * i, card_id=card,
                            station_id=station, product=product, amount_fen=amount, lat=lat, lon=lon)


def auth_records(topic: str, auths: Iterable[Authorisation]) -> Iterator[Outgoing]:
    """Authorisations as records keyed by card."""
    for a in auths:
        yield Outgoing(topic, a.card_id.encode(), a.model_dump_json().encode(), a.tx_id)


def auth_records_fast(topic: str, n: int, *, cards: int = 20_000, seed: int = 7,
                      start: datetime | None = None, tx_prefix: str = "b") -> Iterator[Outgoing]:
    """The records of :func:`auth_records` over :func:`synthetic_authorisations` (same draws, same fields),
    serialised straight from a dict with orjson: a load generator must not spend the CPU it measures with.
    Every value is a valid :class:`Authorisation` (the schema's defaults fill the omitted fields)."""
    t = start or datetime(2026, 5, 1, tzinfo=UTC)
    dumps = orjson.dumps
    for i, (card, station, _, product, amount, lat, lon) in enumerate(_draws(n, cards, seed)):
        tx_id = f"{tx_prefix}{i}"
        value = dumps({"tx_id": tx_id, "ts": t + timedelta(milliseconds=50 * i), "card_id": card,
                       "station_id": station, "product": product, "amount_fen": amount, "lat": lat, "lon": lon})
        yield Outgoing(topic, card.encode(), value, tx_id)


async def make_producer(bootstrap: str, **kw: Any):  # type: ignore[no-untyped-def]
    """A started aiokafka producer tuned for low latency (no linger) on loopback; batches compressed like the
    workers' (:func:`streams.topics.compression_from_env`, none by default)."""
    from aiokafka import AIOKafkaProducer

    from streams.topics import compression_from_env

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=kw.pop("linger_ms", 0), acks=kw.pop("acks", 1),
                         max_batch_size=kw.pop("max_batch_size", 256 * 1024),
                         compression_type=kw.pop("compression_type", compression_from_env()), **kw)
    await p.start()
    return p


async def produce_at_rate(producer: Any, records: Iterable[Outgoing], *, rate: float | None,
                          sent_at: dict[str, float] | None = None, max_seconds: float | None = None) -> int:
    """Send records at ``rate`` per second (None = as fast as possible). Records send times by tx_id.

    Pacing is by a schedule (record i is due at ``start + i/rate``), so a slow moment is caught up instead of
    lowering the rate silently.
    """
    start = time.perf_counter()
    n = 0
    pending: list[asyncio.Future[Any]] = []
    for rec in records:
        if rate:
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        fut = await producer.send(rec.topic, rec.value, key=rec.key)
        if sent_at is not None and rec.tx_id is not None:
            sent_at[rec.tx_id] = time.perf_counter()
        pending.append(fut)
        n += 1
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    if pending:
        await asyncio.gather(*pending)
    return n


async def produce_enveloped(producer: Any, records: Iterable[Outgoing], *, rate: float | None,
                            envelope_topics: frozenset[str], partitions: int, linger_s: float = 0.004,
                            max_items: int = 256, sent_at: dict[str, float] | None = None,
                            lag: list[float] | None = None) -> int:
    """Like :func:`produce_at_rate`, but records of ``envelope_topics`` are grouped per partition into envelopes
    (one Kafka record holding a JSON array), as a gateway batching for ``linger_s`` would do.

    Kafka routes by key; the envelope is sent to the partition the default partitioner gives each of its cards,
    so every card still lands on its own partition. ``sent_at`` records the time each authorisation was *due*
    (handed to the gateway), so latency figures include the batching wait. ``lag`` collects, per round, how
    late the generator itself woke up (seconds past the round's due time): a starved generator shows here,
    not as broker or worker latency.
    """
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    all_parts = list(range(partitions))
    part_of: dict[bytes, int] = {}
    start = time.perf_counter()
    n = 0
    it = iter(records)
    rec = next(it, None)
    pending: list[asyncio.Future[Any]] = []
    next_round = start
    while rec is not None:
        now = time.perf_counter()
        if lag is not None and rate:
            lag.append(max(0.0, now - next_round))
        groups: dict[tuple[str, int], list[bytes]] = {}
        taken = 0
        while rec is not None and taken < max_items * partitions:
            due = start + n / rate if rate else now
            if due > now:
                break
            if rec.topic in envelope_topics:
                part = part_of.get(rec.key)
                if part is None:  # Kafka's murmur2 in pure Python costs ~8 µs: once per card
                    part = part_of[rec.key] = partitioner(rec.key, all_parts, all_parts)
                groups.setdefault((rec.topic, part), []).append(rec.value)
            else:
                pending.append(await producer.send(rec.topic, rec.value, key=rec.key))
            if sent_at is not None and rec.tx_id is not None:
                sent_at[rec.tx_id] = due
            n += 1
            taken += 1
            rec = next(it, None)
        for (topic, part), values in groups.items():
            for i in range(0, len(values), max_items):
                chunk = values[i:i + max_items]
                pending.append(await producer.send(topic, b"[" + b",".join(chunk) + b"]", partition=part))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
        if rec is not None and rate:
            next_round = time.perf_counter() + linger_s
            await asyncio.sleep(linger_s)
    if pending:
        await asyncio.gather(*pending)
    return n


@dataclass
class DecisionCollector:
    """Reads a topic (all partitions, no group); records each id's (default ``tx_id``) first arrival time."""

    bootstrap: str
    topic: str
    from_beginning: bool = False
    arrived: dict[str, float] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    keep_bodies: bool = False
    id_field: str = "tx_id"
    #: also record each id's decision record timestamp (wall clock s, the producer's CreateTime) in ``produced``
    track_produced: bool = False
    produced: dict[str, float] = field(default_factory=dict)
    #: after an empty fetch wait this long before the next one (0 = no pause): the embedded broker answers an
    #: empty fetch at once, so an unpaced reader loops on it and burns ~0.25 core (docs/STREAMING.md)
    pace_s: float = 0.005
    _task: asyncio.Task[None] | None = None
    _consumer: Any = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Assign every partition and start reading in the background (returns when positioned)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_wait_ms=50, max_poll_records=2000)
        await c.start()
        parts = c.partitions_for_topic(self.topic)
        if not parts:
            await c._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
            parts = c.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        c.assign(tps)
        if self.pace_s > 0:
            from streams.direct import pace_empty_fetches

            pace_empty_fetches(c, self.pace_s)
        if self.from_beginning:
            await c.seek_to_beginning(*tps)
        else:
            await c.seek_to_end(*tps)
            for tp in tps:
                await c.position(tp)
        self._consumer = c
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        c = self._consumer
        track = self.track_produced
        while True:
            batches = await c.getmany(timeout_ms=100)
            now = time.perf_counter()
            for msgs in batches.values():
                for m in msgs:
                    ts = m.timestamp / 1000
                    try:
                        body = orjson.loads(m.value)
                    except Exception:  # noqa: BLE001, S112 - not ours to judge; the topic is written by agents
                        continue
                    for d in body if isinstance(body, list) else (body,):  # envelopes carry several
                        try:
                            tx = d[self.id_field]
                        except Exception:  # noqa: BLE001, S112
                            continue
                        if tx in self.arrived:
                            self.duplicates += 1
                            continue
                        self.arrived[tx] = now
                        if track:
                            self.produced[tx] = ts
                        if self.keep_bodies:
                            self.decisions[tx] = d

    async def wait_for(self, tx_ids: Iterable[str], timeout: float) -> bool:
        """Wait until every tx_id has a decision (or the timeout passes)."""
        want = set(tx_ids)
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if want.issubset(self.arrived.keys()):
                return True
            await asyncio.sleep(0.05)
        return want.issubset(self.arrived.keys())

    async def stop(self) -> None:
        """Stop reading."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer:
            with contextlib.suppress(Exception):
                await self._consumer.stop()


async def warm_up(bootstrap: str, auth_topic: str, collector: DecisionCollector, *, probes: int = 64,
                  timeout: float = 60.0) -> float:
    """Send probe authorisations (one card per probe, covering every partition) until all are decided.

    Returns seconds waited. Probes carry tx ids ``probe-…`` so summaries can leave them out.
    """
    t0 = time.perf_counter()
    producer = await make_producer(bootstrap)
    try:
        ids = []
        stamp = int(time.time() * 1000)
        now = datetime.now(UTC)
        recs = []
        for i in range(probes):
            a = Authorisation(tx_id=f"probe-{stamp}-{i}", ts=now, card_id=f"probe-card-{i}", station_id="PROBE",
                              product=Product.GASOLINE_92, amount_fen=100)
            ids.append(a.tx_id)
            recs.append(Outgoing(auth_topic, a.card_id.encode(), a.model_dump_json().encode(), a.tx_id))
        await produce_at_rate(producer, recs, rate=None)
    finally:
        await producer.stop()
    if not await collector.wait_for(ids, timeout):
        missing = len(set(ids) - collector.arrived.keys())
        raise TimeoutError(f"workers did not decide {missing}/{probes} warm-up probes within {timeout:.0f}s")
    return time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


async def aiter_list(items: Iterable[Any]) -> AsyncIterator[Any]:  # pragma: no cover - tiny helper
    """Async iterator over a list."""
    for x in items:
        yield x

"""F10 (docs/FAULTS.md): an agent batch interrupted before its effects were delivered must never be acknowledged,
and its table changelog must never reach Kafka ahead of its effects.

Broker-less: the risk agent runs under Faust's ``test_context()``, fed :class:`faust.types.ConsumerMessage`
records so that acknowledgements reach the app's real (never started) consumer and its commit bookkeeping
(``Consumer._acked`` / ``_new_offset``: the offset ``Consumer.on_stop`` would commit); a fake producer under
``publish`` delivers the changelog but fails (or never completes) the decisions of the second batch — a broker
restart, a partition leader gone, the watchdog's SIGTERM while ``publish`` waits.

Before the fix (``git show ca995f2^:streams/app.py``) take_events acked the interrupted batch in its ``finally``,
so the stopping worker committed past it, and its changelog (state "seen") was delivered while its decisions
were not: a re-run from the committed offset decided nothing, and even a re-run from before the batch took its
authorisations for duplicates. Both assertions below fail on that code.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from faust.types import TP, ConsumerMessage

from fuelcard.events import Authorisation
from streams.app import StreamConfig, create_app
from streams.engine import load_engine

T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)
TOPIC = "t.authorisations"
TXS = [f"tx{i}" for i in range(6)]  # offsets 0..5 of partition 0; batch 1 = 0..2, batch 2 = 3..5


def _auth(i: int) -> bytes:
    return Authorisation(tx_id=TXS[i], ts=T0 + timedelta(minutes=i), card_id=f"c{i}", station_id="S1",
                         product="95", amount_fen=30_000, lat=30.0, lon=120.0).model_dump_json().encode()


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes) -> object:
        self.records.append((key, value))
        return object()


class FakeProducer:
    """aiokafka-like producer: ``delivered`` holds (topic, key, value) of every record whose future resolved.

    ``mode`` decides the fate of decision records while ``failing`` is set: ``"raise"`` — delivery fails (like a
    ``KafkaConnectionError`` across a broker restart); otherwise the future never completes (the task is then
    cancelled, like the watchdog's SIGTERM, or its stream stopped). Every other record is delivered.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.failing = False
        self.delivered: list[tuple[str, bytes | None, bytes]] = []
        self.hanging = asyncio.Event()

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        return self._submit(topic, [(key, value)])

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        return self._submit(topic, batch.records)

    def _submit(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failing and topic.endswith(".decisions"):
            if self.mode == "raise":
                fut.set_exception(ConnectionError("decisions partition leader unavailable"))
            else:
                self.hanging.set()  # never completes
            return fut
        self.delivered.extend((topic, k, v) for k, v in records)
        fut.set_result(None)
        return fut


def _new_app(producer: FakeProducer) -> Any:
    sa = create_app(StreamConfig(broker_url="kafka://127.0.0.1:1", prefix="t", app_id="test-f10",
                                 engine=load_engine(), take_max=3, take_within_s=0.05))
    sa.app.producer._ensure_producer = lambda: producer  # noqa: SLF001 - publish's driver producer
    # acks of the authorisations topic count (the worker's conductor enables them for subscribed topics)
    sa.app.topics.acks_enabled_for = lambda topic: topic == TOPIC
    return sa


async def _feed(agent: Any, offsets: range) -> None:
    channel = agent.stream().channel
    for off in offsets:
        msg = ConsumerMessage(topic=TOPIC, partition=0, offset=off, timestamp=0.0, timestamp_type=0, headers=[],
                              key=f"c{off}".encode(), value=_auth(off), checksum=None, serialized_key_size=0,
                              serialized_value_size=0, generation_id=agent.app.consumer_generation_id)
        msg.incref()  # as the worker's conductor does: one reference per channel the record is delivered to
        await channel.put(await channel.decode(msg))


async def _settle() -> None:
    """Let take_events' generator be finalised (its ``finally`` acks the batch) as in a stopping worker."""
    for _ in range(5):
        gc.collect()
        await asyncio.sleep(0.02)


def _decided(producer: FakeProducer) -> list[str]:
    return [orjson.loads(v)["tx_id"] for t, _, v in producer.delivered if t == "t.decisions"]


async def _wait_for(pred: Any, timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


@pytest.mark.parametrize("mode", ["raise", "cancel", "stream_stop"])
async def test_interrupted_batch_is_not_acknowledged_and_a_rerun_decides_each_tx_once(mode: str) -> None:
    tp = TP(TOPIC, 0)
    # run 1: batch 1 (offsets 0..2) delivered, batch 2 (3..5) interrupted while publishing its decisions
    producer = FakeProducer(mode)
    sa = _new_app(producer)
    consumer = sa.app.consumer
    async with sa.agents["risk"].test_context() as agent:
        await _feed(agent, range(3))
        await _wait_for(lambda: len(_decided(producer)) == 3 and len(consumer._acked[tp]) == 3)  # noqa: SLF001
        producer.failing = True
        await _feed(agent, range(3, 6))
        if mode == "raise":
            await _wait_for(lambda: agent._crash_reason is not None)  # noqa: SLF001 - the body raised
        else:
            await _wait_for(producer.hanging.is_set)
            await asyncio.sleep(0.05)
            if mode == "cancel":  # a stopping worker: mode's Service.stop cancels the actor task (SIGTERM)
                tasks = [aref.actor_task for aref in agent._actors]  # noqa: SLF001
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=5)
                assert all(t.done() for t in tasks)
        # leaving the context stops the agent ("stream_stop": its stream first — Stream.on_stop closes the
        # take_events generator, whose ``finally`` acks the batch, while the body still awaits publish)
    await _settle()

    # the interrupted batch is not acknowledged: the offset the stopping worker commits stays before it
    # (``_new_offset`` consumes the acked offsets it returns, as a commit does)
    assert sorted(consumer._acked[tp]) == [0, 1, 2], sorted(consumer._acked[tp])  # noqa: SLF001
    committed = consumer._new_offset(tp)  # noqa: SLF001
    assert committed == 3, f"the worker would commit {committed}: past the undelivered batch 3..5"
    assert _decided(producer) == TXS[:3]
    # the changelog of the undelivered batch did not reach Kafka (it would say "seen" for tx3..tx5)
    changelog = [k for t, k, _ in producer.delivered if t.endswith("card_state-changelog")]
    assert sorted(changelog) == [b"c0", b"c1", b"c2"], changelog

    # run 2: a new worker restores its table from the changelog and re-reads from the committed offset
    producer2 = FakeProducer("raise")
    sa2 = _new_app(producer2)
    for t, k, v in producer.delivered:
        if t.endswith("card_state-changelog"):
            sa2.card_state.data[k] = v
    async with sa2.agents["risk"].test_context() as agent2:
        await _feed(agent2, range(committed, 6))
        await _wait_for(lambda: sorted(sa2.app.consumer._acked[tp]) == list(range(committed, 6)))  # noqa: SLF001
    decided = Counter(_decided(producer) + _decided(producer2))
    assert decided == Counter(TXS), f"decisions per tx across both runs: {dict(decided)}"

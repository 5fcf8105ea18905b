"""The Flink job computes the same window features as the pure core, on the same events, through Kafka.

A small simulated network (45 days, so every window of the spec matters) is produced to the authorisations
topic of an embedded noida-db broker the test starts itself (port 19300-19349), part of it as single records
and part as the envelopes (JSON arrays) the gateway batches. The PyFlink job (local mini-cluster, Kafka
connector jars from PyPI) reads it as a bounded stream and writes features and window aggregates to two
topics. They must equal:

* per transaction: the core's own replay through :func:`fuelcard.features.update_card`;
* per card and window: the spec's pure replay :func:`fuelcard.window_spec.window_aggregates`.

It fails (never skips) when the broker, the JVM or the jars are missing.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import orjson
import pandas as pd
import pytest

from fuelcard import features as F
from fuelcard import window_spec as W
from fuelcard.events import Authorisation
from fuelcard.simulator.config import SimConfig
from fuelcard.simulator.core import simulate
from streams.broker import EmbeddedBroker
from streams.flink.jars import fetch_connector_jars
from streams.flink.job import JobConfig, run_kafka_job

pytestmark = pytest.mark.integration


def _free_port(lo: int = 19300, hi: int = 19349) -> int:
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def _events() -> list[Authorisation]:
    tx = simulate(SimConfig(seed=11, days=45, stations=6, members=60))["transactions.parquet"]
    tx = tx.assign(ts=tx["ts"].dt.floor("ms")).drop_duplicates(["card_id", "ts"]).sort_values(["ts", "tx_id"])
    out = []
    for r in tx.itertuples(index=False):
        out.append(Authorisation(tx_id=r.tx_id, ts=r.ts.to_pydatetime(), card_id=r.card_id,
                                 station_id=r.station_id, product=r.product, amount_fen=int(r.amount_fen),
                                 litres=None if pd.isna(r.litres) else float(r.litres)))
    return out


async def _produce(bootstrap: str, topics: dict[str, int], source: str, events: list[Authorisation]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, p, 1) for n, p in topics.items()])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        half = len(events) // 2
        for a in events[:half]:  # single records keyed by card, as the gateway sends them one by one
            await producer.send(source, a.model_dump_json().encode(), key=a.card_id.encode())
        # ... and envelopes: JSON arrays of consecutive authorisations of one partition, as the gateway batches
        # them (streams.loadgen.produce_enveloped's format); per-partition time order is kept
        from aiokafka.partitioner import DefaultPartitioner

        parts = list(range(topics[source]))
        partitioner = DefaultPartitioner()
        pending: dict[int, list[bytes]] = {}
        for a in events[half:]:
            p = partitioner(a.card_id.encode(), parts, parts)
            pending.setdefault(p, []).append(a.model_dump_json().encode())
            if len(pending[p]) == 16:
                await producer.send(source, b"[" + b",".join(pending.pop(p)) + b"]", partition=p)
        for p, bodies in pending.items():
            await producer.send(source, b"[" + b",".join(bodies) + b"]", partition=p)
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    rows: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(rows) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    row = orjson.loads(m.value)
                    assert m.key == row["card_id"].encode(), "output records are keyed by card"
                    rows.append(row)
    finally:
        await consumer.stop()
    return rows


def _core_replay(events: list[Authorisation]) -> dict[str, dict[str, float]]:
    """The core's replay: update_card over the events in event-time order."""
    states: dict[str, F.CardState] = {}
    out = {}
    for a in sorted(events, key=lambda e: (e.ts, e.tx_id)):
        tx = F.tx_from_event(a)
        state, feats = F.update_card(states.get(tx.card_id), tx)
        states[tx.card_id] = state
        out[a.tx_id] = dict(zip(F.CARD_FEATURES, feats, strict=True))
    return out


def test_flink_window_features_equal_the_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a short job: the client JIT compiler alone starts faster and burns less CPU than tiered C2
    monkeypatch.setenv("JVM_ARGS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    jars_dir = tmp_path.parent.parent / "flink-jars"  # shared by the session; the setup step fills the real one
    from streams.flink.jars import DEFAULT_JARS_DIR, JarsMissing, connector_jars

    try:
        connector_jars(DEFAULT_JARS_DIR)
        jars_dir = DEFAULT_JARS_DIR
    except JarsMissing:
        fetch_connector_jars(jars_dir)  # from PyPI, as infra/scripts/fetch-flink-jars.sh does

    events = _events()
    assert len(events) > 500
    prefix = f"flink-{uuid.uuid4().hex[:8]}"
    source, feats_topic, aggs_topic = f"{prefix}.authorisations", f"{prefix}.features", f"{prefix}.aggregates"
    expected_aggs = W.window_aggregates([W.event_from_mapping(a.model_dump()) for a in events])

    with EmbeddedBroker(tmp_path / "broker", _free_port()) as broker:
        asyncio.run(_produce(broker.bootstrap, {source: 4, feats_topic: 1, aggs_topic: 1}, source, events))
        run_kafka_job(bootstrap=broker.bootstrap, source_topic=source, features_topic=feats_topic,
                      aggregates_topic=aggs_topic, group_id=prefix, bounded=True,
                      config=JobConfig(parallelism=1, jars_dir=jars_dir))
        got = asyncio.run(_consume(broker.bootstrap, feats_topic, len(events)))
        got_aggs = asyncio.run(_consume(broker.bootstrap, aggs_topic, len(expected_aggs)))

    # per transaction: every spec feature equals the core's update_card replay
    core = _core_replay(events)
    assert sorted(r["tx_id"] for r in got) == sorted(core), "Flink must emit exactly one row per transaction"
    mismatches = [
        (r["tx_id"], name, r[name], core[r["tx_id"]][name])
        for r in got for name in W.FEATURE_NAMES
        if not W.same_value(r[name], core[r["tx_id"]][name])
    ]
    assert not mismatches, f"{len(mismatches)} feature values differ, e.g. {mismatches[:5]}"
    # the windows really matter on this data (not all zeros)
    assert sum(r["card_n_24h"] > 0 for r in got) > len(got) // 4
    assert sum(r["card_n_1h"] > 0 for r in got) > 0

    # per card and window: TUMBLE (local days) and HOP aggregates equal the spec's pure replay
    flink_aggs = {
        (r["aggregate"], r["card_id"], r["window_start_ms"]): {c: r[c] for c in W.AGGREGATE_COLUMNS if r[c] is not None}
        for r in got_aggs
    }
    assert len(got_aggs) == len(flink_aggs), "one row per (aggregate, card, window)"
    assert flink_aggs == expected_aggs
    assert {k[0] for k in flink_aggs} == {a.name for a in W.WINDOW_AGGREGATES}

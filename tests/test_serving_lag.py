"""Consumer lag for /metrics, read from a real embedded broker (noida-db) that the test starts itself."""

from __future__ import annotations

import asyncio

import pytest

from serving.lag import KafkaLag
from serving.metrics import Metrics
from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.integration
PORT = 18190


async def _produce_and_consume(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic("lag-test", 2, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for i in range(50):
        await producer.send_and_wait("lag-test", b"x", partition=i % 2)
    await producer.stop()
    consumer = AIOKafkaConsumer("lag-test", bootstrap_servers=bootstrap, group_id="lag-group",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got = 0
    while got < 20:
        for msgs in (await consumer.getmany(timeout_ms=1000, max_records=20 - got)).values():
            got += len(msgs)
    await consumer.commit()
    await consumer.stop()


def test_consumer_lag_is_read_from_the_broker_and_exposed(tmp_path):
    broker = EmbeddedBroker(tmp_path / "broker", PORT).start()  # raises -> the test fails, never skips
    try:
        asyncio.run(_produce_and_consume(broker.bootstrap))
        lag = KafkaLag(broker.bootstrap, ["lag-group"])
        reading = asyncio.run(lag.read())
        assert sum(reading.values()) == 30 and {k[1] for k in reading} == {"lag-test"}
        metrics = Metrics(lag=lambda: reading)
        text = metrics.render().decode()
        assert 'fuelcard_consumer_lag{group="lag-group",partition="0",topic="lag-test"}' in text
        assert "fuelcard_consumer_lag_total 30.0" in text
    finally:
        broker.stop()


def test_lag_source_without_broker_reports_nothing():
    lag = KafkaLag("127.0.0.1:18191", ["g"], interval_s=0.1, timeout_s=0.5)
    assert lag() == {}
    lag.close()

"""Consumer lag of the speed layer's consumer group, for ``/metrics``.

Lag = end offset − committed offset per partition the group has committed. It is read from the broker by a
background thread every ``interval_s`` (a scrape never waits on Kafka); when the broker is down the last
figures are dropped, so the gauge disappears rather than showing stale numbers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any


class KafkaLag:
    """Callable lag source: ``{(group, topic, partition): messages behind}``."""

    def __init__(self, bootstrap: str, groups: list[str], *, interval_s: float = 10.0, timeout_s: float = 3.0,
                 security: dict[str, Any] | None = None) -> None:
        self.bootstrap, self.groups = bootstrap, list(groups)
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.security = dict(security or {})
        self._latest: dict[tuple[str, str, int], int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_error = ""
        self.last_read = 0.0

    def __call__(self) -> dict[tuple[str, str, int], int]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="kafka-lag", daemon=True)
            self._thread.start()
        return dict(self._latest)

    def close(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._latest = asyncio.run(asyncio.wait_for(self.read(), timeout=self.timeout_s * 3))
                self.last_error, self.last_read = "", time.time()
            except Exception as exc:  # noqa: BLE001 - broker down: no lag figures until it answers
                self._latest = {}
                self.last_error = type(exc).__name__
            self._stop.wait(self.interval_s)

    async def read(self) -> dict[tuple[str, str, int], int]:
        """One reading from the broker."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        ms = int(self.timeout_s * 1000)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=ms, **self.security)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, request_timeout_ms=ms,
                                    enable_auto_commit=False, **self.security)
        try:
            await admin.start()
            await consumer.start()
            try:
                out: dict[tuple[str, str, int], int] = {}
                for group in self.groups:
                    committed = await admin.list_consumer_group_offsets(group)
                    tps = [tp for tp, meta in committed.items() if meta is not None and meta.offset >= 0]
                    if not tps:
                        continue
                    ends = await consumer.end_offsets(tps)
                    for tp in tps:
                        out[(group, tp.topic, tp.partition)] = max(0, int(ends[tp]) - int(committed[tp].offset))
                return out
            finally:
                await consumer.stop()
        except BaseException:
            await consumer.stop()
            raise
        finally:
            await admin.close()


def from_settings(settings: Any, *, groups: list[str] | None = None) -> KafkaLag:
    """Lag of the Faust app's consumer group (``fuelcard-stream``) on the configured brokers."""
    hosts = str(settings.kafka_bootstrap).split("://", 1)[-1]
    bootstrap = ",".join(h.strip() for h in hosts.replace(",", ";").split(";") if h.strip())
    security: dict[str, Any] = {}
    if settings.kafka_security_protocol != "PLAINTEXT":
        security["security_protocol"] = settings.kafka_security_protocol
        if settings.kafka_sasl_mechanism:
            security["sasl_mechanism"] = settings.kafka_sasl_mechanism
            security["sasl_plain_username"] = settings.kafka_sasl_username
            if settings.kafka_sasl_password is not None:
                security["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return KafkaLag(bootstrap, groups or ["fuelcard-stream"], security=security)

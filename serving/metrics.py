"""Prometheus metrics: request latency histograms, decisions by outcome, consumer lag.

Each app gets its own :class:`prometheus_client.CollectorRegistry` (several apps can live in one test process).
Decisions by outcome come from two places: decisions made by this process (counted as they are returned) and
all decisions in the warehouse (read at scrape time, cached for a few seconds). Consumer lag is read at scrape
time from a :class:`LagSource` (the speed layer's consumer groups), also cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LagSource(Protocol):
    """Consumer lag per (group, topic, partition), in messages."""

    def __call__(self) -> dict[tuple[str, str, int], int]: ...


class _Cached:
    def __init__(self, fn: Callable[[], object], ttl_s: float) -> None:
        self.fn, self.ttl_s = fn, ttl_s
        self._at, self._value = 0.0, None
        self._lock = threading.Lock()

    def get(self) -> object:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                try:
                    self._value = self.fn()
                except Exception:  # noqa: BLE001 - a failing source must not break /metrics
                    self._value = None
                self._at = time.monotonic()
            return self._value


class _ScrapeCollector(Collector):
    def __init__(self, decisions: Callable[[], dict[str, int]] | None, lag: LagSource | None) -> None:
        self._decisions = _Cached(decisions, 5.0) if decisions else None
        self._lag = _Cached(lag, 5.0) if lag else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._decisions is not None:
            fam = GaugeMetricFamily("fuelcard_warehouse_decisions",
                                    "Risk decisions stored in the warehouse, by outcome", labels=["outcome"])
            for outcome, n in sorted((self._decisions.get() or {}).items()):
                fam.add_metric([str(outcome)], float(n))
            yield fam
        if self._lag is not None:
            fam = GaugeMetricFamily("fuelcard_consumer_lag",
                                    "Messages not yet consumed, per consumer group/topic/partition",
                                    labels=["group", "topic", "partition"])
            total = GaugeMetricFamily("fuelcard_consumer_lag_total", "Messages not yet consumed, all partitions")
            values = self._lag.get() or {}
            for (group, topic, part), n in sorted(values.items()):
                fam.add_metric([group, topic, str(part)], float(n))
            total.add_metric([], float(sum(values.values())) if values else 0.0)
            yield fam
            yield total


class Metrics:
    """The metrics of one app."""

    def __init__(self, *, decisions: Callable[[], dict[str, int]] | None = None, lag: LagSource | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("fuelcard_api_request_duration_seconds", "API request latency",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter("fuelcard_api_requests", "API requests", ["route", "status"], registry=self.registry)
        self.decisions = Counter("fuelcard_api_decisions", "Risk decisions returned by this API process, by outcome",
                                 ["outcome", "degraded"], registry=self.registry)
        self.model_version = Gauge("fuelcard_model_info", "Model version served (1 = current)", ["kind", "version"],
                                   registry=self.registry)
        self.refused = Counter("fuelcard_api_refused", "Requests refused before routing", ["reason"],
                               registry=self.registry)
        self.registry.register(_ScrapeCollector(decisions, lag))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one request."""
        code = str(status)
        self.latency.labels(route, method, code).observe(seconds)
        self.requests.labels(route, code).inc()

    def decision(self, outcome: str, degraded: bool = False) -> None:
        """Count one decision returned by this process."""
        self.decisions.labels(outcome, "true" if degraded else "false").inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)

"""Stream benchmark: authorisations at a fixed rate through the real risk agents on the embedded broker.

Latency is measured from the moment the load generator hands an authorisation to its Kafka producer to the
moment its decision is read back from the decisions topic (both in this process, one clock). ``lost`` counts
authorisations without a decision when the run ends (after a drain period), ``duplicated`` decisions read more
than once for the same tx_id.

Environment: ``BENCH_SECONDS`` (default 300), ``BENCH_STREAM_RATE`` (tx/s, default 2000),
``BENCH_STREAM_WORKERS`` (Faust worker processes, default 2), ``BENCH_STREAM_TAKE`` (batch size, default 256),
``BENCH_STREAM_PORT`` (broker port, default 19280), ``BENCH_STREAM_ENVELOPE_MS`` (gateway batching window:
authorisations of one partition produced within it travel as one Kafka record; 0 = one record each; default 20).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from streams import topics as T
from streams.cluster import StreamCluster
from streams.loadgen import (
    DecisionCollector,
    auth_records,
    make_producer,
    percentile,
    produce_at_rate,
    produce_enveloped,
    synthetic_authorisations,
    warm_up,
)


async def _drive(cl: StreamCluster, *, rate: float, seconds: float, drain_s: float, envelope_s: float) -> dict:
    col = DecisionCollector(cl.bootstrap, cl.topic(T.DECISIONS.suffix))
    await col.start()
    try:
        await warm_up(cl.bootstrap, cl.topic(T.AUTHORISATIONS.suffix), col, probes=64, timeout=120)
        n = int(rate * seconds)
        producer = await make_producer(cl.bootstrap)
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            records = auth_records(cl.topic(T.AUTHORISATIONS.suffix),
                                   synthetic_authorisations(n, cards=200_000, seed=1))
            if envelope_s > 0:
                produced = await produce_enveloped(
                    producer, records, rate=rate, sent_at=sent, linger_s=envelope_s,
                    envelope_topics=frozenset({cl.topic(T.AUTHORISATIONS.suffix)}),
                    partitions=T.AUTHORISATIONS.partitions)
            else:
                produced = await produce_at_rate(producer, records, rate=rate, sent_at=sent)
        finally:
            await producer.stop()
        send_s = time.perf_counter() - t0
        # Drain: wait while decisions keep arriving (a backlog is slow, not lost); stop after ``drain_s`` without
        # progress. Whatever is still missing then is counted as lost.
        last_n, last_change = -1, time.perf_counter()
        while sent.keys() - col.arrived.keys():
            if len(col.arrived) != last_n:
                last_n, last_change = len(col.arrived), time.perf_counter()
            elif time.perf_counter() - last_change > drain_s:
                break
            await asyncio.sleep(0.5)
        done = time.perf_counter()
        decided = [k for k in sent if k in col.arrived]
        last = max((col.arrived[k] for k in decided), default=done)
        lat = [(col.arrived[k] - sent[k]) * 1000 for k in decided]
        return {"sent": produced, "decided": len(decided), "lost": produced - len(decided),
                "duplicated": col.duplicates, "tx_per_s": round(len(decided) / max(1e-9, last - t0), 1),
                "send_s": round(send_s, 2), "p50_ms": round(percentile(lat, 50), 2),
                "p99_ms": round(percentile(lat, 99), 2), "max_ms": round(max(lat, default=0.0), 2)}
    finally:
        await col.stop()


def run(seconds: float | None) -> dict:
    """Run the benchmark; returns the figures named in the issue (+ workers, batch size, max latency)."""
    seconds = float(seconds or 300)
    rate = float(os.environ.get("BENCH_STREAM_RATE", "2000"))
    workers = int(os.environ.get("BENCH_STREAM_WORKERS", "2"))
    take = int(os.environ.get("BENCH_STREAM_TAKE", "256"))
    port = int(os.environ.get("BENCH_STREAM_PORT", "19280"))
    # Gateway-side micro-batching of authorisations (0 = one Kafka record per authorisation).
    envelope_ms = float(os.environ.get("BENCH_STREAM_ENVELOPE_MS", "20"))
    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    cl = StreamCluster(root, port=port, workers=workers, agents="risk", take_max=take, take_within_s=0.003)
    try:
        cl.start_broker()
        cl.start_workers()
        import psutil

        procs = [psutil.Process(p.pid) for p in cl.procs]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        figures = asyncio.run(_drive(cl, rate=rate, seconds=seconds, drain_s=15.0,
                                   envelope_s=envelope_ms / 1000))
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
        figures["worker_cpu_s"] = round(cpu, 1)
        figures["worker_cpu_us_per_tx"] = round(cpu / max(1, figures["decided"]) * 1e6, 1)
        figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
        cl.check_workers()
    finally:
        cl.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"rate_target": rate, "seconds": seconds, **figures, "workers": workers, "take": take,
            "envelope_ms": envelope_ms,
            "engine": _engine_name()}


def _engine_name() -> str:
    from fuelcard.settings import load_settings
    from streams.engine import load_engine

    s = load_settings()
    e = load_engine(artifacts_dir=getattr(s, "registry_dir", s.artifacts_dir))  # what the workers load
    return f"{type(e).__name__}:{e.model_version}"

"""Stream benchmark: authorisations at a fixed rate through the real risk agents on the embedded broker.

Latency is measured from the moment the load generator hands an authorisation to its Kafka producer to the
moment its decision is read back from the decisions topic (both in this process, one clock). ``lost`` counts
authorisations without a decision when the run ends (after a drain period), ``duplicated`` decisions read more
than once for the same tx_id.

Environment: ``BENCH_SECONDS`` (default 300), ``BENCH_STREAM_RATE`` (tx/s, default 2000),
``BENCH_STREAM_WORKERS`` (Faust worker processes, default 2), ``BENCH_STREAM_TAKE`` (batch size, default 256),
``BENCH_STREAM_PORT`` (broker port, default 19380), ``BENCH_STREAM_ENVELOPE_MS`` (gateway batching window:
authorisations of one partition produced within it travel as one Kafka record; 0 = one record each; default 40:
most of the pipeline's CPU is per Kafka round, not per authorisation — docs/STREAMING.md),
``BENCH_STREAM_RETENTION_S`` (retention of every topic of the run, changelogs included, default 60; 0 = the
production retention: the embedded broker's CPU per byte grows with what it retains; a backlog older than this
would be deleted unread and count as lost), ``BENCH_STREAM_REGISTRY`` (model registry, default
``var/bench-stream/registry``, trained once), ``BENCH_STREAM_KEEP=1`` (keep the run directory with the logs),
``FUELCARD_STREAM_FETCH_PACE_MS`` (pause after an empty fetch in the workers and the collector, default 5;
0 = none). Before the timed run it samples the CPU of the idle pipeline for 3 s (``*_idle_cores``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from streams import topics as T
from streams.cluster import StreamCluster
from streams.loadgen import (
    DecisionCollector,
    auth_records_fast,
    make_producer,
    percentile,
    produce_at_rate,
    produce_enveloped,
    warm_up,
)


async def _drive(cl: StreamCluster, *, rate: float, seconds: float, drain_s: float, envelope_s: float,
                 on_start: Callable[[], None] = lambda: None, on_end: Callable[[], None] = lambda: None,
                 cpu_now: Callable[[], dict[str, float]] | None = None, idle_s: float = 3.0,
                 fetch_pace_s: float = 0.005) -> dict:
    col = DecisionCollector(cl.bootstrap, cl.topic(T.DECISIONS.suffix), track_produced=True, pace_s=fetch_pace_s)
    await col.start()
    idle: dict[str, float] = {}
    try:
        await warm_up(cl.bootstrap, cl.topic(T.AUTHORISATIONS.suffix), col, probes=64, timeout=120)
        if cpu_now is not None and idle_s > 0:
            # What the pipeline burns with no traffic (cores): the consumers' empty-fetch loops show here.
            c0, w0 = cpu_now(), time.perf_counter()
            await asyncio.sleep(idle_s)
            c1, el = cpu_now(), time.perf_counter() - w0
            idle = {f"{k}_idle_cores": round((c1[k] - c0[k]) / el, 3) for k in c0}
        n = int(rate * seconds)
        producer = await make_producer(cl.bootstrap)
        sent: dict[str, float] = {}
        lag: list[float] = []  # the load generator's own lateness per send round (s)
        topic = cl.topic(T.AUTHORISATIONS.suffix)
        records = auth_records_fast(topic, n, cards=200_000, seed=1)
        # This process's objects (sent/arrived maps) only grow: no full collection needs to scan them.
        gc.collect()
        gc.freeze()
        n_warm = len(col.arrived)
        on_start()
        wall0 = time.time() - time.perf_counter()  # perf_counter → wall clock (record timestamps are wall)
        t0 = time.perf_counter()
        try:
            if envelope_s > 0:
                produced = await produce_enveloped(
                    producer, records, rate=rate, sent_at=sent, linger_s=envelope_s,
                    envelope_topics=frozenset({topic}), partitions=T.AUTHORISATIONS.partitions, lag=lag)
            else:
                produced = await produce_at_rate(producer, records, rate=rate, sent_at=sent)
        finally:
            await producer.stop()
        send_s = time.perf_counter() - t0
        # Drain: wait while decisions keep arriving (a backlog is slow, not lost); stop after ``drain_s`` without
        # progress. Whatever is still missing then is counted as lost.
        # (Counting, not set differences: every id in ``arrived`` after the warm-up is one of ``sent``.)
        last_n, last_change = -1, time.perf_counter()
        while len(col.arrived) - n_warm < len(sent):
            if len(col.arrived) != last_n:
                last_n, last_change = len(col.arrived), time.perf_counter()
            elif time.perf_counter() - last_change > drain_s:
                break
            await asyncio.sleep(0.2)
        done = time.perf_counter()
        on_end()  # CPU figures stop here: the statistics below are not the pipeline's work
        decided = [k for k in sent if k in col.arrived]
        last = max((col.arrived[k] for k in decided), default=done)
        lat = [(col.arrived[k] - sent[k]) * 1000 for k in decided]
        # Where the time goes: due → decision record written by the worker (gateway window + broker + worker
        # queue + processing), and decision record → read back here (broker + this process's collector).
        to_worker = [(col.produced[k] - wall0 - sent[k]) * 1000 for k in decided if k in col.produced]
        to_collector = [(col.arrived[k] + wall0 - col.produced[k]) * 1000 for k in decided if k in col.produced]
        # The worst one-second windows (by send time): when the tail happens, it shows as a few bad seconds.
        by_s: dict[int, list[float]] = {}
        for k, ms in zip(decided, lat, strict=True):
            by_s.setdefault(int(sent[k] - t0), []).append(ms)
        worst = sorted(((percentile(v, 99), sec) for sec, v in by_s.items()), reverse=True)[:5]
        return {"sent": produced, "decided": len(decided), "lost": produced - len(decided),
                "duplicated": col.duplicates, "tx_per_s": round(len(decided) / max(1e-9, last - t0), 1),
                "send_s": round(send_s, 2), "p50_ms": round(percentile(lat, 50), 2),
                "p99_ms": round(percentile(lat, 99), 2), "max_ms": round(max(lat, default=0.0), 2),
                "over_100ms": sum(1 for x in lat if x > 100),
                "to_worker_p50_p99_ms": [round(percentile(to_worker, q), 1) for q in (50, 99)],
                "to_collector_p50_p99_ms": [round(percentile(to_collector, q), 1) for q in (50, 99)],
                "loadgen_lag_p99_max_ms": [round(percentile(lag, 99) * 1000, 1), round(max(lag, default=0) * 1000, 1)],
                "worst_seconds_p99_ms": [[sec, round(p, 1)] for p, sec in worst], **idle}
    finally:
        await col.stop()


BENCH_DATA_DIR = Path(__file__).parents[1] / "var" / "bench-stream"
BENCH_SIM = ("--days", "45", "--members", "5000", "--stations", "100", "--seed", "7")


def bench_registry(root: Path | None = None) -> Path:
    """A model registry with a promoted fraud model for the benchmark's workers, trained once and cached.

    The model is what ``fuelcard train fraud`` produces (the same command, on a small simulated history:
    ``fuelcard simulate`` with :data:`BENCH_SIM`); it is cached in ``var/bench-stream/registry`` (or
    ``BENCH_STREAM_REGISTRY``) and reused while it has a promoted version. ``var/bench-stream`` is laid out
    as a ``FUELCARD_DATA_DIR`` (its ``registry`` is the settings' ``registry_dir``) for runners that start
    workers with the settings' registry (the soak).
    """
    root = Path(root or os.environ.get("BENCH_STREAM_REGISTRY") or BENCH_DATA_DIR / "registry").absolute()
    stamp = root / "bench-source-fingerprint"
    fingerprint = _training_code_fingerprint()
    if (root / "fraud" / "CURRENT").exists():
        if not stamp.exists() or stamp.read_text() == fingerprint:
            return root  # (a registry we did not train — no stamp — is used as given)
        shutil.rmtree(root)  # our cache, trained by older training/feature code: train again
    cli = [sys.executable, "-c", "from fuelcard.cli import main; main()"]
    with tempfile.TemporaryDirectory(prefix="bench-stream-sim-") as tmp:
        sim = Path(tmp) / "sim"
        subprocess.run([*cli, "simulate", "--out", str(sim), "--quiet", *BENCH_SIM], check=True,  # noqa: S603
                       stdout=subprocess.DEVNULL)
        subprocess.run([*cli, "train", "fraud", "--from-dir", str(sim), "--registry", str(root),  # noqa: S603
                        "--reports", str(Path(tmp) / "reports"), "--json"], check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(fingerprint)
    return root


def _training_code_fingerprint() -> str:
    """Hash of the code that shapes the trained model (features, training, the train command)."""
    import hashlib

    top = Path(__file__).parents[1]
    h = hashlib.sha256()
    for rel in ("fuelcard/features.py", "fuelcard/commands/train_jobs.py", *sorted(
            str(p.relative_to(top)) for p in (top / "models" / "fraud").glob("*.py"))):
        f = top / rel
        h.update(rel.encode() + b"\0" + (f.read_bytes() if f.exists() else b"") + b"\0")
    return h.hexdigest()[:16]


def engine_info(registry: Path) -> dict:
    """What the workers load from ``registry`` (the same ``load_engine`` call): engine, model and rule set."""
    from streams.engine import load_engine

    e = load_engine(artifacts_dir=registry, require_model=True)  # raises without a promoted model
    current = (registry / "fraud" / "CURRENT").read_text().strip()
    return {"engine": type(e).__name__, "model_version": e.model_version, "registry_version": current,
            "ruleset_version": e.ruleset_version}


def run(seconds: float | None) -> dict:
    """Run the benchmark; returns the figures named in the issue (+ workers, batch size, engine, CPU per tx)."""
    seconds = float(seconds or 300)
    rate = float(os.environ.get("BENCH_STREAM_RATE", "2000"))
    workers = int(os.environ.get("BENCH_STREAM_WORKERS", "2"))
    take = int(os.environ.get("BENCH_STREAM_TAKE", "256"))
    port = int(os.environ.get("BENCH_STREAM_PORT", "19380"))
    # Gateway-side micro-batching of authorisations (0 = one Kafka record per authorisation).
    envelope_ms = float(os.environ.get("BENCH_STREAM_ENVELOPE_MS", "40"))
    # Pause after an empty fetch, workers (StreamConfig.fetch_pace_s reads the same variable) and collector:
    # noida-db answers empty fetches at once, and unpaced consumers loop on them (docs/STREAMING.md).
    pace_ms = float(os.environ.get("FUELCARD_STREAM_FETCH_PACE_MS", "5"))
    registry = bench_registry()
    engine = engine_info(registry)
    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    retention_s = float(os.environ.get("BENCH_STREAM_RETENTION_S", "60"))
    # noida-db's CPU per produced byte grows with the bytes it retains (2,000 records/s: 18 % of a core after 25 s,
    # 45 % after 100 s; flat at 15 % with a 10 s retention): bound what a long run leaves in it.
    cl = StreamCluster(root, port=port, workers=workers, agents="risk", take_max=take, take_within_s=0.003,
                       artifacts=registry, retention_s=retention_s or None)
    try:
        cl.start_broker()
        cl.start_workers()
        import psutil

        procs = [psutil.Process(p.pid) for p in cl.procs]
        broker = psutil.Process(cl.broker.pid) if cl.broker is not None and cl.broker.pid else None
        me = psutil.Process()

        def cpu(ps: list[psutil.Process]) -> float:
            return sum(sum(p.cpu_times()[:2]) for p in ps)

        groups = {"worker": procs, "broker": [broker] if broker else [], "bench": [me]}
        t0: dict[str, float] = {}
        used: dict[str, float] = {}
        figures_extra: dict[str, float] = {}

        def on_start() -> None:  # called by _drive after the warm-up, when the timed run starts
            t0.update({k: cpu(v) for k, v in groups.items()})
            figures_extra["load_avg_1m_start"] = round(os.getloadavg()[0], 2)

        def on_end() -> None:  # ... and when every decision is in (or the drain gave up)
            used.update({k: cpu(v) - t0[k] for k, v in groups.items()})

        figures = asyncio.run(_drive(cl, rate=rate, seconds=seconds, drain_s=15.0,
                                     envelope_s=envelope_ms / 1000, on_start=on_start, on_end=on_end,
                                     cpu_now=lambda: {k: cpu(v) for k, v in groups.items()},
                                     fetch_pace_s=pace_ms / 1000))
        n = max(1, figures["decided"])
        for name in groups:
            figures[f"{name}_cpu_s"] = round(used[name], 1)
            figures[f"{name}_cpu_us_per_tx"] = round(used[name] / n * 1e6, 1)
        figures.update(figures_extra, load_avg_1m=round(os.getloadavg()[0], 2))
        cl.check_workers()
    finally:
        cl.stop()
        if os.environ.get("BENCH_STREAM_KEEP") != "1":  # 1: keep the run directory (worker logs, broker log)
            shutil.rmtree(root, ignore_errors=True)
    return {"rate_target": rate, "seconds": seconds, **figures, "workers": workers, "take": take,
            "envelope_ms": envelope_ms, "fetch_pace_ms": pace_ms, "retention_s": retention_s, **engine,
            **({"run_dir": str(root)} if os.environ.get("BENCH_STREAM_KEEP") == "1" else {})}

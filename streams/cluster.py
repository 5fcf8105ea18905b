"""Run the speed layer locally: embedded broker + topics + N Faust worker processes, stopped by PID.

Used by the demo, ``make up``, the stream benchmark and the integration tests.

**Progress watchdog** (``watchdog_s``): a supervisor thread compares, for every worker, its consumer group's
committed offsets on the worker's source topics with the topics' end offsets. A partition that has records
waiting (committed < end) and whose committed offset has not moved for ``watchdog_s`` seconds means the worker
stopped consuming it (a Faust worker that stalled with records fetched but never processed, seen after
``kill -9`` + broker restart; the sink worker that did not resume after a broker restart, F8 in
docs/FAULTS.md). The watchdog then asks the worker for its partition report (``SIGUSR1``: per partition the
fetched position, the offset last handed to the agent, in flight / acked / committed, pause states and a verdict;
copied into the watchdog's log and the event's ``partitions``, so the stall's cause is named before the restart
masks it — F11 in docs/FAULTS.md was found that way), stops it with SIGTERM
(it leaves its group; SIGKILL after ``stop_timeout_s``, followed by a broker restart because noida-db never
evicts a dead member) and starts it again with the same command: it resumes from its committed offsets and
recovers its tables from their changelogs, and effects are idempotent, so a restart costs time, never
correctness. Every restart is recorded in :attr:`StreamCluster.watchdog_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams import topics as T
from streams.broker import EmbeddedBroker, _run_coro, bootstrap_servers
from streams.topics import all_topic_specs, ensure_topics, with_retention

log = logging.getLogger(__name__)

# Source topics (consumer-group commits) of each agent; table changelogs are read without commits.
AGENT_SOURCES: dict[str, tuple[T.TopicSpec, ...]] = {
    "risk": (T.AUTHORISATIONS,),
    "points": (T.PAYMENTS, T.REDEMPTIONS, T.POINTS_REQUESTS),
    "sink": (T.AUTHORISATIONS, T.PAYMENTS, T.RECHARGES, T.REDEMPTIONS, T.DECISIONS, T.POINTS_LEDGER),
}


@dataclass
class WorkerSpec:
    """How one worker process was started (so the watchdog can start it again the same way)."""

    index: int
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    group: str
    sources: tuple[str, ...]
    # Static shard (index, count) and the topics it applies to: the worker is assigned only the partitions
    # p % count == index of those (streams.app.shard_assignor), so only those are its to commit.
    shard: tuple[int, int] | None = None
    sharded_topics: frozenset[str] = frozenset()
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0


@dataclass
class StreamCluster:
    """Broker (embedded unless ``broker_url`` is given), topics, and worker subprocesses."""

    data_dir: Path
    port: int = 19210
    workers: int = 1
    agents: str = "risk,points,sink"
    prefix: str | None = None
    app_id: str | None = None
    directory: Path | None = None
    sink: str = "null"
    take_max: int = 256
    take_within_s: float = 0.004
    broker_url: str | None = None
    loglevel: str = "WARNING"
    # Several risk workers: static partition ownership, one app id (group) per worker — noida-db 0.2.3 never
    # completes a rebalance of a group with more than one member (see docs/STREAMING.md).
    static_shards: bool = True
    direct_port_base: int | None = None  # risk worker k serves direct decisions on base + k
    artifacts: Path | None = None  # model registry root for the risk engine (default: the settings' one)
    # Progress watchdog: restart a worker when a partition with waiting records has not been committed for this
    # many seconds (None = off). ``diag_interval_s`` makes workers log assignment/positions periodically.
    watchdog_s: float | None = None
    watchdog_interval_s: float = 2.0
    watchdog_max_restarts: int = 5  # per worker; beyond it the watchdog only logs
    stop_timeout_s: float = 20.0
    diag_interval_s: float = 0.0
    worker_args: tuple[str, ...] = ()  # extra ``streams.worker`` options for every worker
    # Benchmarks only: every topic (changelogs too) created with this retention (streams.topics.with_retention;
    # noida-db's CPU per produced byte grows with what it retains). None = production retention.
    retention_s: float | None = None
    broker: EmbeddedBroker | None = field(default=None, init=False)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    specs: dict[int, WorkerSpec] = field(default_factory=dict, init=False)  # by PID
    watchdog_events: list[dict[str, Any]] = field(default_factory=list, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _watchdog: threading.Thread | None = field(default=None, init=False, repr=False)
    _watchdog_stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        run = uuid.uuid4().hex[:8]
        # One prefix/app id per run: old state never leaks into a new run, and a consumer group left behind
        # by a killed worker of an earlier run (noida-db never evicts it) can never hold our partitions.
        self.prefix = self.prefix or f"fc-{run}"
        self.app_id = self.app_id or f"fuelcard-stream-{run}"

    @property
    def url(self) -> str:
        return self.broker_url or (self.broker.url if self.broker else f"kafka://127.0.0.1:{self.port}")

    @property
    def bootstrap(self) -> str:
        return bootstrap_servers(self.url)

    def topic(self, suffix: str) -> str:
        """Full name of one of our topics."""
        return f"{self.prefix}.{suffix}"

    def start_broker(self) -> None:
        """Start the embedded broker (unless an external one is configured) and create every topic."""
        if self.broker_url is None:
            self.broker = EmbeddedBroker(self.data_dir / "broker", self.port,
                                         log_path=self.data_dir / "broker.log")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.broker.start()
        self._ensure_topics([self.app_id or ""])

    def _ensure_topics(self, app_ids: list[str]) -> None:
        specs = [x for i in app_ids for x in all_topic_specs(self.prefix or "", i)]
        if self.retention_s:
            specs = with_retention(specs, int(self.retention_s * 1000))
        _run_coro(ensure_topics(self.bootstrap, specs))

    def start_workers(self, n: int | None = None, *, agents: str | None = None, sink: str | None = None,
                      group_suffix: str = "") -> None:
        """Start ``n`` worker processes (they join one consumer group and share the partitions).

        Workers running a different set of agents must be in their own group (``group_suffix``): a consumer
        group hands partitions to members regardless of which agents they run.
        """
        n = self.workers if n is None else n
        agents = agents or self.agents
        sink = sink or self.sink
        app_id = f"{self.app_id}{group_suffix}"
        sharded = self.static_shards and n > 1 and "risk" in agents.split(",")
        if sharded:
            self._ensure_topics([f"{app_id}-w{k}" for k in range(n)])
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Workers run in data_dir (Faust writes its <app_id>-data folder into the working directory), so every
        # path they get must not depend on the caller's working directory.
        env["FUELCARD_DATA_DIR"] = str(Path(os.environ.get("FUELCARD_DATA_DIR", "var")).absolute())
        if sink.startswith("jsonl:"):
            sink_dir, sep, tag = sink[len("jsonl:"):].partition("::")
            sink = f"jsonl:{Path(sink_dir).absolute()}{sep}{tag}"
        run_dir = self.data_dir.absolute()
        for k in range(n):
            i = len(self.procs)
            prof = os.environ.get("FUELCARD_WORKER_PROFILE")  # a directory: profile workers with cProfile
            pre = ["-m", "cProfile", "-o", f"{Path(prof).absolute()}/worker-{i}.prof"] if prof else []
            cmd = [sys.executable, *pre, "-m", "streams.worker", "--broker", self.url, "--prefix", str(self.prefix),
                   "--app-id", f"{app_id}-w{k}" if sharded else app_id,
                   # with static shards every worker is its own group: only worker 0 may run the non-risk
                   # agents, or each worker would apply every payment (duplicate ledger lines)
                   "--agents", "risk" if sharded and k > 0 else agents, "--sink", sink,
                   "--take-max", str(self.take_max), "--take-within", str(self.take_within_s),
                   "--loglevel", self.loglevel]
            if self.directory:
                cmd += ["--directory", str(Path(self.directory).absolute())]
            if sharded:
                cmd += ["--shard", f"{k}/{n}"]
            if self.artifacts:
                cmd += ["--artifacts", str(Path(self.artifacts).absolute())]
            if self.direct_port_base and "risk" in agents.split(","):
                cmd += ["--direct-port", str(self.direct_port_base + k)]
            if self.diag_interval_s:
                cmd += ["--diag-interval", str(self.diag_interval_s)]
            cmd += list(self.worker_args)
            worker_agents = "risk" if sharded and k > 0 else agents
            sources = sorted({s.name(self.prefix or "") for a in worker_agents.split(",")
                              for s in AGENT_SOURCES.get(a.strip(), ())})
            spec = WorkerSpec(i, cmd, env, run_dir, logs / f"worker-{i}.log",
                              f"{app_id}-w{k}" if sharded else app_id, tuple(sources),
                              shard=(k, n) if sharded else None,
                              sharded_topics=frozenset({T.AUTHORISATIONS.name(self.prefix or "")}))
            with self._lock:
                proc = self._spawn(spec)
                self.procs.append(proc)
        if self.watchdog_s:
            self.start_watchdog()

    def _spawn(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        with open(spec.log_path, "ab") as fh:
            proc = subprocess.Popen(spec.cmd, stdout=fh, stderr=subprocess.STDOUT,  # noqa: S603
                                    stdin=subprocess.DEVNULL, env=spec.env, start_new_session=True, cwd=spec.cwd)
        spec.started_at = time.monotonic()
        self.specs[proc.pid] = spec
        return proc

    def check_workers(self) -> None:
        """Raise if a worker died."""
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"worker {i} exited with {p.returncode}; see {self.data_dir}/logs/worker-{i}.log")

    def stop_workers(self, timeout: float = 15.0) -> None:
        """SIGTERM every worker we started (so they leave the group), SIGKILL stragglers."""
        self.stop_watchdog()
        with self._lock:
            self._stop_workers(timeout)

    def _stop_workers(self, timeout: float) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        self.procs.clear()

    def kill_worker(self, i: int) -> None:
        """``kill -9`` one worker (fault injection)."""
        with self._lock:
            p = self.procs[i]
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)

    def stop(self) -> None:
        """Stop workers, then the broker."""
        self.stop_workers()
        if self.broker:
            self.broker.stop()

    # ------------------------------------------------------------------------------------------ watchdog
    def start_watchdog(self) -> None:
        """Start the progress watchdog thread (idempotent); see the module docstring."""
        if self._watchdog is not None and self._watchdog.is_alive():
            return
        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="stream-watchdog", daemon=True)
        self._watchdog.start()

    def stop_watchdog(self) -> None:
        """Stop the watchdog thread (it is restarted by the next :meth:`start_workers`)."""
        self._watchdog_stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=30)
        self._watchdog = None

    def _watch(self) -> None:
        try:
            asyncio.run(self._watch_loop())
        except Exception:  # noqa: BLE001 - a dying watchdog must say so, not take the caller down
            log.exception("stream watchdog stopped")

    async def _watch_loop(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        assert self.watchdog_s is not None
        # (pid, topic, partition) -> (committed offset, monotonic time it last changed or work started waiting)
        last: dict[tuple[int, str, int], tuple[int, float]] = {}
        admin = consumer = None
        while not self._watchdog_stop.is_set():
            await asyncio.sleep(self.watchdog_interval_s)
            if self._watchdog_stop.is_set():
                break
            try:
                if admin is None:
                    admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                    await admin.start()
                    consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                                request_timeout_ms=5000)
                    await consumer.start()
                with self._lock:
                    live = [(i, p, self.specs.get(p.pid)) for i, p in enumerate(self.procs) if p.poll() is None]
                now = time.monotonic()
                stalled: list[tuple[int, Any, WorkerSpec, list[str]]] = []
                for i, proc, spec in live:
                    if spec is None or not spec.sources:
                        continue
                    parts = {t: consumer.partitions_for_topic(t) for t in spec.sources}
                    if not all(parts.values()):
                        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
                        continue
                    tps = [TopicPartition(t, q) for t in spec.sources for q in sorted(parts[t] or ())
                           if spec.shard is None or t not in spec.sharded_topics
                           or q % spec.shard[1] == spec.shard[0]]
                    ends = await consumer.end_offsets(tps)
                    committed = {(tp.topic, tp.partition): om.offset
                                 for tp, om in (await admin.list_consumer_group_offsets(spec.group)).items()}
                    behind = []
                    for tp in tps:
                        c = committed.get((tp.topic, tp.partition), -1)
                        key = (proc.pid, tp.topic, tp.partition)
                        prev = last.get(key)
                        if prev is None or prev[0] != c:
                            last[key] = (c, max(now, spec.started_at))
                            continue
                        end = ends[tp]
                        if end > max(c, 0) and now - max(prev[1], spec.started_at) >= self.watchdog_s:
                            behind.append(f"{tp.topic}[{tp.partition}] committed={c} end={end}")
                        elif end <= max(c, 0):
                            last[key] = (c, now)  # nothing waiting: the clock starts when records arrive
                    if behind:
                        stalled.append((i, proc, spec, behind))
            except Exception as exc:  # noqa: BLE001 - broker restarting/unreachable: start the clocks again
                log.info("watchdog: broker not answering (%s); resetting progress clocks", exc)
                last.clear()
                for c in (admin, consumer):
                    if c is not None:
                        with contextlib.suppress(Exception):
                            await c.close() if c is admin else await c.stop()
                admin = consumer = None
                continue
            for i, proc, spec, behind in stalled:
                if self._watchdog_stop.is_set():
                    break
                await asyncio.to_thread(self._restart_stalled, i, proc, spec, behind)
                for key in [k for k in last if k[0] == proc.pid]:
                    del last[key]
        for c in (admin, consumer):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close() if c is admin else await c.stop()

    def _restart_stalled(self, i: int, proc: subprocess.Popen[bytes], spec: WorkerSpec, behind: list[str]) -> None:
        event: dict[str, Any] = {"worker": spec.index, "pid": proc.pid, "group": spec.group,
                                 "stalled": behind[:20], "at": time.time()}
        if spec.restarts >= self.watchdog_max_restarts:
            if not any(e.get("gave_up") and e["worker"] == spec.index for e in self.watchdog_events):
                event["gave_up"] = True
                self.watchdog_events.append(event)
                log.error("watchdog: worker %d (%s) still stalled after %d restarts: %s", spec.index, spec.group,
                          spec.restarts, behind[:5])
            return
        msg = (f"watchdog: worker {spec.index} pid {proc.pid} group {spec.group} made no progress for "
               f"{self.watchdog_s:g}s on {len(behind)} partition(s) with records waiting: {'; '.join(behind[:8])}; "
               "restarting it")
        log.warning(msg)
        with open(spec.log_path, "ab") as fh:
            fh.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] [supervisor] {msg}\n".encode())
        # The worker logs, per partition, where its records stand between the broker and the agent (fetched
        # position, offset last handed to the agent, in flight, acked, committed, pause states, a verdict:
        # streams.worker.partition_report) and where its tasks and generators are suspended; the report is
        # copied here and into the event, so the cause of the stall is named before the restart masks it.
        report = self._sigusr1_report(proc, spec.log_path)
        event["partitions"] = report
        if report:
            log.warning("watchdog: worker %d before the restart:\n%s", spec.index, "\n".join(report))
        with self._lock:
            if proc not in self.procs or self._watchdog_stop.is_set():
                return  # stopped or replaced meanwhile by the caller
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            killed = False
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
                killed = True
            if killed and self.broker is not None:
                # noida-db never evicts a member that did not leave: restart it (data, topics, offsets persist)
                log.warning("watchdog: worker %d needed SIGKILL; restarting the embedded broker", spec.index)
                self.broker.restart()
            spec.restarts += 1
            new = self._spawn(spec)
            self.procs[self.procs.index(proc)] = new
        event.update({"new_pid": new.pid, "sigkill": killed, "restarts": spec.restarts})
        self.watchdog_events.append(event)

    @staticmethod
    def _sigusr1_report(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 3.0) -> list[str]:
        """SIGUSR1 the worker and return the ``diag:   `` lines of the partition report it logs in answer."""
        try:
            start = log_path.stat().st_size
        except OSError:
            start = 0
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        lines: list[str] = []
        while time.monotonic() < deadline:
            time.sleep(0.25)
            try:
                with open(log_path, "rb") as fh:
                    fh.seek(start)
                    text = fh.read().decode("utf-8", "replace")
            except OSError:
                continue
            head = text.find("diag: partitions (SIGUSR1)")
            if head < 0:
                continue
            lines = [ln.split("diag:   ", 1)[1] for ln in text[head:].splitlines()[1:] if "diag:   " in ln]
            if lines and "flow_active=" in lines[-1]:  # the report's last line: it is complete
                break
        return lines

    def __enter__(self) -> StreamCluster:
        try:
            self.start_broker()
            self.start_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

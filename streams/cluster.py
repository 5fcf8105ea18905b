"""Run the speed layer locally: embedded broker + topics + N Faust worker processes, stopped by PID.

Used by the demo, ``make up``, the stream benchmark and the integration tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streams.broker import EmbeddedBroker, _run_coro, bootstrap_servers
from streams.topics import all_topic_specs, ensure_topics


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
    broker: EmbeddedBroker | None = field(default=None, init=False)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)

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
        _run_coro(ensure_topics(self.bootstrap, all_topic_specs(self.prefix or "", self.app_id or "")))

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
            specs = [x for k in range(n) for x in all_topic_specs(self.prefix or "", f"{app_id}-w{k}")]
            _run_coro(ensure_topics(self.bootstrap, specs))
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
            with open(logs / f"worker-{i}.log", "ab") as fh:
                self.procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,  # noqa: S603
                                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                                   cwd=run_dir))

    def check_workers(self) -> None:
        """Raise if a worker died."""
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"worker {i} exited with {p.returncode}; see {self.data_dir}/logs/worker-{i}.log")

    def stop_workers(self, timeout: float = 15.0) -> None:
        """SIGTERM every worker we started (so they leave the group), SIGKILL stragglers."""
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
        p = self.procs[i]
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=5)

    def stop(self) -> None:
        """Stop workers, then the broker."""
        self.stop_workers()
        if self.broker:
            self.broker.stop()

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

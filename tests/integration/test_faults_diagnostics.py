"""Integration: a stalled worker's partitions are described before the progress watchdog restarts it.

"A partition can hold fetched records without handing them to the agent" (F11 and "Watchdog diagnostics" in
docs/FAULTS.md): the watchdog's restart cures such a stall and hides its cause. So before it restarts a worker it asks
it (SIGUSR1) for ``streams.worker.partition_report`` — per partition the fetched position, the offset last
handed to the agent, records in flight / acked / committed, Faust's and aiokafka's pause states and a verdict —
and copies the report into its own log and ``watchdog_events``.

Real noida-db broker on a free port of 127.0.0.1:19680-19699, real worker processes; FAILS if the broker cannot
start.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from streams import topics as T
from streams.broker import _run_coro
from streams.cluster import StreamCluster, WorkerSpec
from tests.faults.harness import free_port
from tests.integration.test_stream_broker import _auth, _send

pytestmark = pytest.mark.integration

PORTS = (19680, 19699)

FAKE_WORKER = r"""
import signal, sys, time
def report(*_):
    print("x WARNING diag: partitions (SIGUSR1) stats={}", flush=True)
    print("diag:   t.authorisations[3] hw=9 pos=9 prefetched_to=None read=4 unacked=0 acked=0 committed=5 "
          "[active] fetched-not-delivered", flush=True)
    print("diag:   flow_active=True flow_control_active=True in_recovery=False", flush=True)
signal.signal(signal.SIGUSR1, report)
time.sleep(300)
"""


def test_watchdog_copies_the_stalled_workers_partition_report(tmp_path: Path) -> None:
    cl = StreamCluster(tmp_path, port=free_port(*PORTS), watchdog_s=3.0, watchdog_interval_s=0.5,
                       stop_timeout_s=5.0)
    try:
        cl.start_broker()
        _run_coro(_send(cl, [_auth(f"D{i}", f"card-{i}", i) for i in range(8)]))
        (tmp_path / "logs").mkdir(exist_ok=True)
        spec = WorkerSpec(0, [sys.executable, "-c", FAKE_WORKER], dict(os.environ), tmp_path,
                          tmp_path / "logs" / "fake.log", group=f"{cl.app_id}-fake",
                          sources=(cl.topic(T.AUTHORISATIONS.suffix),))
        cl.procs.append(cl._spawn(spec))  # noqa: SLF001
        cl.start_watchdog()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("new_pid" in e for e in cl.watchdog_events):
            time.sleep(0.2)
        events = [e for e in cl.watchdog_events if "new_pid" in e]
        assert events, "the watchdog never restarted the stalled worker"
        assert events[0]["partitions"] == [
            "t.authorisations[3] hw=9 pos=9 prefetched_to=None read=4 unacked=0 acked=0 committed=5 [active] "
            "fetched-not-delivered",
            "flow_active=True flow_control_active=True in_recovery=False"], events[0]
    finally:
        cl.stop()


def test_worker_reports_every_partition_on_sigusr1(tmp_path: Path) -> None:
    """A real risk worker answers SIGUSR1 with one line per assigned source partition (all idle once every
    record is decided and committed) and its flow state."""
    n = 24
    cl = StreamCluster(tmp_path, port=free_port(*PORTS), workers=1, agents="risk", loglevel="WARNING")
    try:
        cl.start_broker()
        cl.start_workers()
        _run_coro(_send(cl, [_auth(f"R{i}", f"card-{i}", i) for i in range(n)]))
        from tests.faults.harness import wait_decided
        got = _run_coro(wait_decided(cl.bootstrap, cl.topic(T.DECISIONS.suffix), [f"R{i}" for i in range(n)], 120))
        assert got == n
        log_path = tmp_path / "logs" / "worker-0.log"
        report: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the commits caught up: every partition idle
            start = log_path.stat().st_size
            os.kill(cl.procs[0].pid, signal.SIGUSR1)
            time.sleep(1.5)
            text = log_path.read_bytes()[start:].decode("utf-8", "replace")
            assert "diag: partitions (SIGUSR1)" in text, text[-2000:]
            report = [ln.split("diag:   ", 1)[1] for ln in text.splitlines() if "diag:   " in ln]
            if report and all(x.endswith(" idle") for x in report[:-1]):
                break
        parts = [x for x in report if x.startswith(cl.topic(T.AUTHORISATIONS.suffix) + "[")]
        assert len(parts) == T.AUTHORISATIONS.partitions, report
        assert all(x.endswith(" idle") and "[active]" in x for x in parts), report
        # hw = committed on every partition, and the hws add up to what was sent
        hws = [x.split(" hw=")[1].split()[0] for x in parts]
        hws = [int(h) if h.isdigit() else 0 for h in hws]  # None: nothing fetched from an empty partition
        assert sum(hws) == n
        assert report[-1].startswith("flow_active=True flow_control_active=True in_recovery=False"), report
        cl.check_workers()
    finally:
        cl.stop()

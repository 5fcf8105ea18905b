"""F10 end to end on the real broker: a batch whose publish failed must never be committed past — neither by
the worker's commits nor by its stop (SIGTERM, as the watchdog does) —; the next worker decides it, every tx
exactly once.

The worker runs with ``FUELCARD_FAULT_FAIL_PUBLISH=HANG-`` (``streams.worker.install_publish_failure``): the
publish of any batch holding a ``HANG-*`` decision fails before delivering anything; Faust restarts the crashed
agent, which goes on with the next records. Before the fix (``ca995f2^:streams/app.py``) Faust's ``take_events``
acknowledged the failed batch, the worker committed past it, and the replacement never decided those
authorisations. Real noida-db on a free port of 127.0.0.1:19680-19699;
FAILS if the broker cannot start. (The broker-less version, with delivery failures and the changelog order:
test_interrupted_batch.py.)
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from streams import topics as T
from streams.broker import _run_coro
from streams.cluster import StreamCluster
from tests.faults.harness import free_port, read_topic
from tests.integration.test_stream_broker import _auth, _send

pytestmark = pytest.mark.integration


def _decided(cl: StreamCluster) -> Counter[str]:
    return Counter(d["tx_id"] for d in _run_coro(read_topic(cl.bootstrap, cl.topic(T.DECISIONS.suffix)))
                   if "tx_id" in d)


def _wait(pred, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_stopped_mid_publish_does_not_commit_past_the_batch(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ok = [f"OK-{i}" for i in range(24)]
    hang = [f"HANG-{i}" for i in range(24)]
    cl = StreamCluster(tmp_path, port=free_port(19680, 19699), workers=1, agents="risk", loglevel="WARNING",
                       stop_timeout_s=20.0)
    try:
        cl.start_broker()
        monkeypatch.setenv("FUELCARD_FAULT_FAIL_PUBLISH", "HANG-")
        cl.start_workers()
        monkeypatch.delenv("FUELCARD_FAULT_FAIL_PUBLISH")
        _run_coro(_send(cl, [_auth(t, f"card-{i}", i) for i, t in enumerate(ok)]))
        _wait(lambda: set(ok) <= _decided(cl).keys(), 120, "the OK authorisations to be decided")
        _run_coro(_send(cl, [_auth(t, f"card-{i}", 100 + i) for i, t in enumerate(hang)]))
        log = tmp_path / "logs" / "worker-0.log"
        _wait(lambda: "fault injection: the publish" in log.read_text(errors="replace"), 60,
              "the worker's publish of a HANG batch")
        time.sleep(3.0)  # the worker's commit interval (1 s) passes after the failed batch
        stopped = cl.procs[0]
        cl.stop_workers(timeout=30)  # SIGTERM: the consumer commits on stop
        assert stopped.returncode != -9, "the worker did not stop on SIGTERM (it would still hold its partitions)"
        assert not any(d.startswith("HANG-") for d in _decided(cl)), "a failed publish was delivered"

        # the replacement worker (same group) resumes from the committed offsets: every HANG tx is decided
        cl.start_workers()
        assert cl.procs[0].pid != stopped.pid
        _wait(lambda: set(hang) <= _decided(cl).keys(), 90, "the HANG authorisations to be decided by the "
              "replacement worker (they are lost when the stopped worker committed past its interrupted batch)")
        time.sleep(2.0)
        decided = _decided(cl)
        assert {t: decided[t] for t in ok + hang} == dict.fromkeys(ok + hang, 1), decided
        cl.check_workers()
    finally:
        os.environ.pop("FUELCARD_FAULT_FAIL_PUBLISH", None)
        cl.stop()

"""Embedded Kafka-protocol broker (noida-db 0.2.3) for the demo, `make up` and integration tests.

Production points ``FUELCARD_KAFKA_BOOTSTRAP`` at a real Kafka cluster and never starts this.

Known noida-db defects and what we do about them (see docs/STREAMING.md):

* a consumer that dies without leaving its group (``kill -9``) is never evicted, so a restarted worker never
  gets partitions. Workers are always stopped with SIGTERM (they leave the group); after an unclean death the
  supervisor calls :meth:`EmbeddedBroker.restart` — data, topics and committed offsets persist on disk, so the
  restart is cheap and loses nothing (``tests/integration/test_stream_broker.py`` shows it).
* auto-created topics get one partition: every topic is created up front by :func:`streams.topics.ensure_topics`.
* B1: records acknowledged while the server *process* shuts down (SIGTERM) can be missing after the restart.
  :meth:`EmbeddedBroker.restart` therefore restarts the Kafka *service* inside the running server
  (``noida-db stop kafka`` + ``noida-db start kafka``), which loses nothing and also drops stale group members;
  ``restart(process=True)`` is the unplanned-restart fault the fault suite injects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NOIDA_VERSION = "0.2.3"


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""


def noida_binary() -> str:
    """Path of the real ``noida-db`` server binary shipped in the ``noida-db`` wheel.

    We run the binary itself, not the Python launcher script, so the PID we hold is the server's PID and
    stopping it by PID really stops the server.
    """
    try:
        from importlib.resources import files

        binpath = files("noida_db").joinpath("noida-db")
        if binpath.is_file():
            path = str(binpath)
            if not os.access(path, os.X_OK):
                os.chmod(path, 0o755)  # noqa: S103 - the wheel ships it without the exec bit on some installs
            return path
    except ModuleNotFoundError:
        pass
    found = shutil.which("noida-db")
    if not found:
        raise BrokerError(f"noida-db {NOIDA_VERSION} is not installed (pip install noida-db=={NOIDA_VERSION})")
    return found


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def bootstrap_servers(url: str) -> str:
    """Turn a Faust URL (``kafka://h:p;h2:p2``) into an aiokafka bootstrap string (``h:p,h2:p2``).

    >>> bootstrap_servers("kafka://127.0.0.1:19201;10.0.0.2:9092")
    '127.0.0.1:19201,10.0.0.2:9092'
    """
    hosts = url.split("://", 1)[-1]
    return ",".join(h.strip() for h in hosts.replace(",", ";").split(";") if h.strip())


async def wait_kafka_ready(bootstrap: str, timeout: float = 20.0) -> None:
    """Wait until the broker answers a metadata request (not just a TCP accept)."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} not ready after {timeout:.0f}s: {last!r}")


@dataclass
class EmbeddedBroker:
    """One noida-db process serving only Kafka on 127.0.0.1:port, data persisted in ``data_dir``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Stopping signals only the PID we started.
    """

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    # Every restart made through :meth:`restart`: ``{"mode": "service" | "process", "seconds": ...,
    # "error": ...}`` — "process" after a failed service restart means B1 may have lost acknowledged writes.
    restarts: list[dict[str, object]] = field(default_factory=list, init=False, repr=False)
    _service_stopped: bool = field(default=False, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        """aiokafka-style bootstrap servers."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Faust-style broker URL."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and block until it answers Kafka metadata requests; raise BrokerError otherwise."""
        if self.proc and self.proc.poll() is None:
            return self
        if port_is_open(self.host, self.port):
            raise BrokerError(f"port {self.host}:{self.port} is already in use")
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._service_stopped = False
        log = self.log_path or (self.data_dir / "noida-db.log")
        cmd = [noida_binary(), "start", "--data-dir", str(self.data_dir), "--host", self.host,
               "--only", "kafka", "--kafka-port", str(self.port)]
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,  # noqa: S603
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not port_is_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise BrokerError(f"noida-db exited with {self.proc.returncode}; log: {log}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"noida-db did not listen on {self.bootstrap} within {timeout:.0f}s; log: {log}")
            time.sleep(0.05)
        try:
            _run_coro(wait_kafka_ready(self.bootstrap, timeout=max(1.0, deadline - time.monotonic())))
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker we started (SIGTERM, then SIGKILL), by PID only. Data stays on disk."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while port_is_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, timeout: float = 20.0, *, process: bool = False, fallback: bool = True) -> EmbeddedBroker:
        """Restart the broker on the same data directory: topics, data and committed offsets persist, stale
        consumer-group members do not (the workaround for noida-db never evicting a consumer that died without
        leaving its group).

        By default this restarts the Kafka *service* inside the running server (``noida-db stop kafka`` +
        ``noida-db start kafka``, ~0.5 s), which keeps every acknowledged write even while producers are writing.
        ``process=True`` stops the server process (SIGTERM) and starts a new one — that path loses records it
        acknowledged during the shutdown (B1, docs/FAULTS.md); the fault suite uses it to model an unplanned
        restart. A failed service restart is tried again (a loaded machine can make ``noida-db stop/start kafka``
        slow); only when the server process itself is gone, or ``fallback=True`` and the service restart keeps
        failing, is the process restarted. Never silently: every restart is appended to :attr:`restarts` with
        its mode, and a fallback is logged as a warning (it is the B1 path).
        """
        t0 = time.monotonic()
        error: str | None = None
        if not process and self.proc is not None and self.proc.poll() is None:
            for _attempt in range(3):
                try:
                    self.restart_service(timeout=timeout)
                    self.restarts.append({"mode": "service", "seconds": round(time.monotonic() - t0, 2),
                                          "error": error})
                    return self
                except (BrokerError, OSError, subprocess.SubprocessError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    if self.proc is None or self.proc.poll() is not None:
                        break  # the server process died: only a process restart can bring it back
            if not fallback and self.proc is not None and self.proc.poll() is None:
                raise BrokerError(f"service restart of noida-db failed 3 times: {error}")
            logging.getLogger(__name__).warning(
                "noida-db service restart failed (%s): restarting the server PROCESS instead, which may lose "
                "acknowledged writes (B1)", error)
        self.stop()
        self.start(timeout=timeout)
        self.restarts.append({"mode": "process", "seconds": round(time.monotonic() - t0, 2), "error": error})
        return self

    def restart_service(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Restart only the Kafka service of the running noida-db server (its control commands on the data
        directory): listeners close before the data is saved, so no acknowledged write is lost (unlike B1)."""
        binary = noida_binary()
        for action in ("stop", "start"):
            if action == "stop" and self._service_stopped:
                continue  # an earlier attempt stopped it and failed to start it: only start it now
            res = subprocess.run([binary, action, "kafka", "--data-dir", str(self.data_dir)],  # noqa: S603
                                 capture_output=True, timeout=timeout, check=False)
            if res.returncode != 0:
                raise BrokerError(f"noida-db {action} kafka failed ({res.returncode}): "
                                  f"{res.stdout.decode(errors='replace')[-300:]}")
            self._service_stopped = action == "stop"
        if self.proc is None or self.proc.poll() is not None:
            raise BrokerError("noida-db server exited during a service restart")
        _run_coro(wait_kafka_ready(self.bootstrap, timeout=timeout))
        return self

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_coro(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine from sync code, also when an event loop is already running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()

"""Start and stop a local ClickHouse *server* (Debian ``clickhouse-server``) with a minimal config.

Used by the integration tests and by anyone who wants a throw-away real server on 127.0.0.1.
All state lives in one directory; the process is stopped by its PID (never by name).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "infra" / "clickhouse"
CANDIDATE_BINARIES = ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server", "/usr/bin/clickhouse")


class ServerStartError(RuntimeError):
    """The ClickHouse server could not be started (missing binary, port taken, crashed at start)."""


def find_server_binary() -> list[str]:
    """The command that runs the server (``clickhouse-server`` or ``clickhouse server``)."""
    found = shutil.which("clickhouse-server")
    if found:
        return [found]
    for cand in CANDIDATE_BINARIES:
        if os.access(cand, os.X_OK):
            return [cand, "server"] if cand.endswith("/clickhouse") else [cand]
    raise ServerStartError(
        "clickhouse-server is not installed (run `bash infra/scripts/install-system-deps.sh` or "
        "`apt-get install -y clickhouse-server`)"
    )


def render_config(root: Path, *, tcp_port: int, http_port: int) -> Path:
    """Write config.xml and users.xml for a server rooted at ``root``; returns the config path."""
    for sub in ("data", "tmp", "log", "user_files", "format_schemas"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    values = {"{{ROOT}}": str(root), "{{TCP_PORT}}": str(tcp_port), "{{HTTP_PORT}}": str(http_port)}
    for name in ("config.xml", "users.xml"):
        text = (TEMPLATE_DIR / f"{name}.template").read_text()
        for key, val in values.items():
            text = text.replace(key, val)
        (root / name).write_text(text)
    return root / "config.xml"


def _world_traversable(path: Path) -> bool:
    """True when every ancestor of ``path`` lets other users through (so the 'clickhouse' user can reach it)."""
    p = path.resolve()
    for d in (p, *p.parents):
        if not d.stat().st_mode & 0o001:
            return False
    return True


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(lo: int = 19100, hi: int = 19199) -> tuple[int, int]:
    """Two free ports (tcp, http) from [lo, hi], starting at a PID-dependent offset."""
    span = hi - lo + 1
    start = os.getpid() % span
    free: list[int] = []
    for i in range(span):
        port = lo + (start + i) % span
        if port_is_free(port):
            free.append(port)
            if len(free) == 2:
                return free[0], free[1]
    raise ServerStartError(f"no two free ports in {lo}-{hi}")


def pick_port(lo: int = 19150, hi: int = 19199) -> int:
    """One free port from [lo, hi]."""
    return pick_ports(lo, hi)[0] if hi > lo else lo


@dataclass
class ClickHouseServer:
    """A running local server; ``url`` is ready for :func:`warehouse.connect`."""

    root: Path
    tcp_port: int
    http_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def url(self, database: str = "fuelcard") -> str:
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}/{database}"

    def start(self, *, timeout_s: float = 20.0) -> ClickHouseServer:
        """Start the server and wait until it answers ``SELECT 1`` over the native protocol."""
        cmd = find_server_binary()
        config = render_config(self.root, tcp_port=self.tcp_port, http_port=self.http_port)
        argv = [*cmd, f"--config-file={config}"]
        if os.geteuid() == 0 and shutil.which("runuser") and _world_traversable(self.root.parent):
            # Run as the unprivileged 'clickhouse' user when it exists (the Debian package creates it) and can
            # reach the directory; otherwise (e.g. under pytest's private 0700 temp dir) run as root.
            try:
                import pwd

                pw = pwd.getpwnam("clickhouse")
                for p in [self.root, *self.root.rglob("*")]:
                    os.chown(p, pw.pw_uid, pw.pw_gid)
                argv = ["runuser", "-u", "clickhouse", "--", *argv]
            except KeyError:
                pass
        log = (self.root / "log" / "stdout.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        last_err: Exception | None = None
        from clickhouse_driver import Client

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"clickhouse-server exited with {self.process.returncode}: {self._tail_log()}"
                )
            try:
                Client(host="127.0.0.1", port=self.tcp_port, connect_timeout=1).execute("SELECT 1")
                return self
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last_err = exc
                time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"clickhouse-server not ready after {timeout_s}s: {last_err}; {self._tail_log()}")

    def _tail_log(self) -> str:
        for name in ("clickhouse-server.err.log", "stdout.log"):
            p = self.root / "log" / name
            if p.exists() and p.stat().st_size:
                return " | ".join(p.read_text(errors="replace").strip().splitlines()[-3:])
        return "(no log)"

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the server by its process group (the one we started), SIGKILL after a timeout."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> ClickHouseServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(root: Path, *, port_range: tuple[int, int] = (19100, 19199)) -> ClickHouseServer:
    """Pick free ports in ``port_range`` and start a server rooted at ``root`` (retries once on a port race)."""
    last: Exception | None = None
    for _ in range(3):
        tcp, http = pick_ports(*port_range)
        try:
            return ClickHouseServer(root=root, tcp_port=tcp, http_port=http).start()
        except ServerStartError as exc:
            last = exc
            if "Address already in use" not in str(exc):
                raise
    raise ServerStartError(str(last))

"""Integration fixtures: a real ClickHouse server (Debian clickhouse-server) started by the tests themselves.

The server listens on 127.0.0.1 on ports from 19100-19199, keeps all state in a temp dir and is stopped by
its PID at the end of the session. If it cannot start, the tests FAIL (never skip).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import pytest

from warehouse.server_process import ClickHouseServer, start_server


@pytest.fixture(scope="session")
def clickhouse_server() -> ClickHouseServer:
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    # Our own temp dir: pytest's rotating basetemp can be deleted by other pytest runs on a shared machine.
    root = Path(tempfile.mkdtemp(prefix="fuelcard-clickhouse-"))
    try:
        server = start_server(root, port_range=(19100, 19199))  # raises -> every dependent test errors/fails
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

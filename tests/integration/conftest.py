"""Integration fixtures: a real ClickHouse server (Debian clickhouse-server) started by the tests themselves.

The server listens on 127.0.0.1 on ports from 19100-19199, keeps all state in a temp dir and is stopped by
its PID at the end of the session. If it cannot start, the tests FAIL (never skip).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from warehouse.server_process import ClickHouseServer, start_server


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> ClickHouseServer:
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    root = Path(tmp_path_factory.mktemp("clickhouse-server"))
    server = start_server(root, port_range=(19100, 19199))  # raises -> every dependent test errors/fails
    yield server
    server.stop()

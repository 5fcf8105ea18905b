"""Fixtures of the fault suite: one real ClickHouse server (Debian 18.16, ports 19400-19449) for the session,
and runs of the slow fault cases shared by several test modules.

Every service is started by these fixtures on 127.0.0.1 and stopped by its PID; if one cannot start, the
tests that need it FAIL (never skip).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults import harness as H


@pytest.fixture(scope="session")
def fault_ch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real clickhouse-server on 127.0.0.1 (raises → dependent tests error, never skip)."""
    server = H.start_clickhouse(Path(tmp_path_factory.mktemp("faults-clickhouse")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def poison_run(tmp_path_factory: pytest.TempPathFactory, fault_ch: Any) -> tuple[H.CaseResult, Path]:
    """Case 3 (poison input) run once: its result and the directory holding the worker logs."""
    root = Path(tmp_path_factory.mktemp("faults-poison"))
    res = H.report(H.case_poison(root, fault_ch.url("faults_poison"), members=120))
    return res, root

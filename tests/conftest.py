"""Suite-wide pytest hooks."""

from __future__ import annotations

import os
import sys

_EXIT: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    _EXIT["status"] = int(exitstatus)


def pytest_unconfigure(config):  # noqa: ARG001
    # chdb (in-process ClickHouse) can crash in its native teardown at interpreter exit
    # ("ShutdownTablesThreadPool is not initialized"), turning a green run into a segfault. Results are
    # already reported here, so leave without running native destructors, keeping pytest's exit status.
    if "status" in _EXIT and os.environ.get("FUELCARD_PYTEST_HARD_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT["status"])

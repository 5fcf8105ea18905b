"""Run the test suite as several pytest processes (``make test``).

chdb, the embedded ClickHouse engine, allows one data directory per process, and several test modules each
build their own embedded warehouse. Each module therefore runs in its own pytest process, except the modules
that share one serving environment (built once, ~1 minute), which run together. Every process must pass.

    python -m tests.run_suite [extra pytest args]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# Modules built on serving.testing.shared_env (one warehouse for all of them, one process).
SERVING_GROUP = [
    "tests/test_api_endpoints.py",
    "tests/test_serving_privacy.py",
    "tests/test_grafana_dashboard.py",
    "tests/test_schemathesis_api.py",
    "tests/integration/test_dashboard_browser.py",
]


def groups() -> list[list[str]]:
    files = sorted(p.relative_to(ROOT).as_posix() for p in TESTS.rglob("test_*.py"))
    files = [f for f in files if f != "tests/test_train_fixtures.py"]  # a helper module, no tests of its own
    out = [[f] for f in files if f not in SERVING_GROUP]
    out.append([f for f in SERVING_GROUP if f in files])
    return [g for g in out if g]


def main(argv: list[str]) -> int:
    failed: list[str] = []
    started = time.perf_counter()
    all_groups = groups()
    for i, group in enumerate(all_groups, 1):
        label = " ".join(group)
        print(f"\n=== [{i}/{len(all_groups)}] {label}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "pytest", *argv, *group], cwd=ROOT)  # noqa: S603
        print(f"=== [{i}/{len(all_groups)}] exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc not in (0, 5):  # 5: nothing collected (e.g. filtered out by -m)
            failed.append(f"{label} (exit {rc})")
    print(f"\n=== {len(all_groups)} pytest processes in {time.perf_counter() - started:.0f} s; "
          f"{len(failed)} failed", flush=True)
    for f in failed:
        print(f"FAILED GROUP: {f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

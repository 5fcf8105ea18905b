"""Fault suite benchmark: ``make faults`` / ``make bench BENCH=faults``.

Runs every fault case of issue 9 on the real system (noida-db broker + Faust worker processes + a real
clickhouse-server 18.16 + the CLI) and prints one row per case:
``{"bench": "faults", "cases": [{"name", "events_in", "effects_out", "lost", "duplicated", "details"}, ...]}``.

Cases (tests/faults/harness.py, docs/FAULTS.md): worker_kill9, broker_restart (the supervisor's restart of the
Kafka service), broker_restart_process (an unplanned restart of the broker process: B1 may lose acknowledged
records), broker_durability (process restart under a full-speed producer: B1) and broker_durability_service
(the same with the service restart: the workaround), warehouse_restart, poison_input, cli_broken_files,
security, and a soak at the speed layer's target rate (2,000 tx/s) for 2 minutes — ``BENCH_SECONDS`` sets the
soak length instead. When the target rate is not sustained (lag grows), a second soak runs at 80 % of the
throughput the agents did sustain, so the table shows both.

Besides the JSON line, the run writes the Markdown table for docs/FAULTS.md and the README to
``benchmarks/results/faults.md`` (``BENCH_FAULTS_MD`` overrides the path), headed by the command, the commit,
the time and the load average — pasting it is mechanical. ``python -m tests.faults.harness`` prints the same
table from the last ``faults`` line of ``benchmarks/results/latest.jsonl``.
Ports 19400-19499 on 127.0.0.1; every process started here is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.faults import harness as H

REPO = Path(__file__).resolve().parents[1]


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,  # noqa: S607
                             text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,  # noqa: S607
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return out.stdout.strip() + (" (working tree with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_markdown(result: dict, started: float, path: Path | None = None) -> Path:
    """Write the table of ``result`` with a provenance header; returns the path."""
    path = path or Path(os.environ.get("BENCH_FAULTS_MD", REPO / "benchmarks" / "results" / "faults.md"))
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    head = (f"Produced by `make faults` (`python -m benchmarks faults`) on commit {_commit()}, "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))}–{time.strftime('%H:%M UTC', time.gmtime())}; "
            f"load average at the end {load} (1/5/15 min), {os.cpu_count()} CPUs.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + "\n\n" + H.markdown_table(result) + "\n")
    return path


def run(seconds: float | None) -> dict:
    """Run every case; ``seconds`` is the soak length (default 120 s)."""
    started = time.time()
    soak_s = float(seconds) if seconds else 120.0
    root = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    cases: list[H.CaseResult] = []
    server = H.start_clickhouse(root / "clickhouse")
    try:
        cases.append(H.report(H.case_worker_kill9(root / "kill9", server.url("bf_kill9"))))
        cases.append(H.report(H.case_broker_restart(root / "broker", server.url("bf_broker"))))
        cases.append(H.report(H.case_broker_restart(root / "broker_p", server.url("bf_broker_p"), process=True)))
        cases.append(H.report(H.broker_durability(root / "durability", process=True)))
        cases.append(H.report(H.broker_durability(root / "durability_s", process=False)))
        cases.append(H.report(H.case_warehouse_restart(root / "warehouse", server, server.url("bf_wh"))))
        cases.append(H.report(H.case_poison(root / "poison", server.url("bf_poison"))))
        cases.append(H.report(H.case_cli_broken_files(root / "cli", server)))
        poison_sim = H.small_network(23, members=200)["members"]
        cases.append(H.report(H.case_security(root / "security", server, repo=REPO,
                                              log_roots=[root / "kill9", root / "broker", root / "poison"],
                                              log_pii=H.pii_values(poison_sim))))
    finally:
        server.stop()
    try:
        rate = float(os.environ.get("BENCH_SOAK_RATE", H.SOAK_TARGET_RATE))
        target = H.report(H.soak_case(soak_s, rate=rate))
        cases.append(target)
        if not target.details["lag_flat"]:
            # the target rate is not sustained on this machine: soak again at 80 % of what the agents did sustain
            rate2 = max(100.0, round(0.8 * target.details["sustained_tx_per_s"], -1))
            cases.append(H.report(H.soak_case(soak_s, rate=rate2)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {"cases": [c.row() for c in cases], "all_clean": all(c.ok for c in cases),
              "all_clean_except_known_defects": all(c.ok for c in cases if c.name not in H.KNOWN_DEFECT_ROWS)}
    md = write_markdown({"bench": "faults", **result}, started)
    print(f"[faults] Markdown table written to {md}", file=sys.stderr, flush=True)  # noqa: T201
    return result

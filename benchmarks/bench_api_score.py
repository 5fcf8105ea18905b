"""API benchmark: ``POST /v1/risk/decide`` under an open-loop load on loopback, with the real stream behind it.

Starts the embedded broker, one risk worker and the risk API (uvicorn, separate process), then sends
authorisations at a fixed rate for a fixed time over a pool of keep-alive connections and stops by itself.
Latency is measured from each request's *scheduled* send time to its complete response (no coordinated
omission). ``degraded`` counts answers where the API fell back to its rules-only decision because the stream's decision
had not arrived within the time budget (reason ``DEGRADED_STREAM_TIMEOUT``/``..._UNAVAILABLE``).

Environment: ``BENCH_SECONDS`` (default 60), ``BENCH_API_RPS`` (default 500), ``BENCH_API_PORT`` (default
18010), ``BENCH_API_BROKER_PORT`` (default 19285), ``BENCH_API_WORKERS`` (default 1), ``BENCH_API_PATH`` (``direct``
— the API asks the worker owning the card, default — or ``kafka`` — produce and wait for the decisions topic).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streams.cluster import StreamCluster
from streams.loadgen import percentile, synthetic_authorisations


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, body: bytes
                   ) -> tuple[int, bytes]:
    writer.write(b"POST /v1/risk/decide HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json"
                 b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def load(host: str, port: int, *, rps: float, seconds: float, connections: int = 64) -> dict:
    """Open-loop load: request i is due at ``start + i/rps``; stops by itself after ``seconds``."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    n = int(rps * seconds)
    bodies = [a.model_dump_json().encode() for a in synthetic_authorisations(n, cards=50_000, seed=5,
                                                                            tx_prefix=f"api{int(time.time())}-")]
    lat: list[float] = []
    errors = degraded = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: bytes, due: float) -> None:
        nonlocal errors, degraded
        conn = await pool.get()
        try:
            status, resp = await asyncio.wait_for(_request(*conn, f"{host}:{port}", body), timeout=10)
            if status != 200:
                errors += 1
            elif b"DEGRADED_STREAM_" in resp:  # the API's fallback (the core may mark rules-only decisions
                degraded += 1                # degraded too when no model is promoted; those came from the stream)
            pool.put_nowait(conn)
        except Exception:  # noqa: BLE001 - a failed request is an error, and its connection is replaced
            errors += 1
            conn[1].close()
            pool.put_nowait(await asyncio.open_connection(host, port))
        lat.append((time.perf_counter() - due) * 1000)

    # The generator must not stop itself: a full collection of this process's heap (tens of ms) would show up
    # as latency of every request in flight. Nothing here needs the cycle collector for the run's length.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            due = start + i / rps
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(body, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
        gc.unfreeze()
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {"rps": round(len(lat) / elapsed, 1), "requests": len(lat), "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2), "errors": errors, "degraded": degraded}


def _wait_connected(host: str, port: int, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{host}:{port}/v1/risk/status", timeout=1).json().get("connected"):
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"risk API on {host}:{port} not connected to the stream within {timeout:.0f}s")


async def _warm(host: str, port: int, timeout: float) -> None:
    """Until the stream answers (not degraded) — workers have their partitions and are recovered."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        deadline = time.monotonic() + timeout
        i = 0
        while time.monotonic() < deadline:
            for a in synthetic_authorisations(1, cards=1, seed=i, tx_prefix=f"warm{time.time_ns()}-"):
                _, resp = await _request(reader, writer, f"{host}:{port}", a.model_dump_json().encode())
                if b"DEGRADED_STREAM_" not in resp:
                    return
            i += 1
            await asyncio.sleep(0.2)
        raise TimeoutError("the stream never answered within the budget during warm-up")
    finally:
        writer.close()


def run(seconds: float | None) -> dict:
    """Run the benchmark; returns rps, p50/p99 latency, errors (+ degraded answers and the target rate)."""
    seconds = float(seconds or 60)
    rps = float(os.environ.get("BENCH_API_RPS", "500"))
    port = int(os.environ.get("BENCH_API_PORT", "18010"))
    broker_port = int(os.environ.get("BENCH_API_BROKER_PORT", "19285"))
    workers = int(os.environ.get("BENCH_API_WORKERS", "1"))
    # "direct": the API asks the owning worker over a socket (decision before the Kafka round trip);
    # "kafka": produce → agent → decisions topic → API.
    path = os.environ.get("BENCH_API_PATH", "direct")
    direct_base = int(os.environ.get("BENCH_API_DIRECT_PORT", "18060"))
    host = "127.0.0.1"
    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    # On the direct path the risk agent only reads back what the workers already decided: no need for a 1 ms take
    # window (1,000 wake-ups a second of the worker's loop); on the Kafka path it is the decision latency.
    cl = StreamCluster(root, port=broker_port, workers=workers, agents="risk",
                       take_within_s=0.001 if path == "kafka" else 0.02,
                       direct_port_base=direct_base if path == "direct" else None)
    api: subprocess.Popen[bytes] | None = None
    try:
        cl.start_broker()
        cl.start_workers()
        with open(root / "api.log", "ab") as log:
            # FUELCARD_API_PROFILE=<file> (inherited): the API process profiles itself with cProfile
            api = subprocess.Popen([sys.executable, "-m", "serving.risk", "--port", str(port),  # noqa: S603
                                    "--bootstrap", cl.bootstrap, "--prefix", str(cl.prefix),
                                    "--direct-ports", ",".join(str(direct_base + k) for k in range(workers))
                                    if path == "direct" else "",
                                    # BENCH_API_BUDGET_MS: a long budget makes every answer the stream's, so CPU
                                    # per request can be compared between runs on a busy machine
                                    *(["--budget-ms", os.environ["BENCH_API_BUDGET_MS"]]
                                      if os.environ.get("BENCH_API_BUDGET_MS") else [])],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_connected(host, port, 60)
        asyncio.run(_warm(host, port, 120))
        import psutil

        api_p = psutil.Process(api.pid)
        workers_p = [psutil.Process(p.pid) for p in cl.procs]
        broker_p = psutil.Process(cl.broker.pid) if cl.broker is not None and cl.broker.pid else None
        cpu_api0, cpu_w0 = sum(api_p.cpu_times()[:2]), sum(sum(w.cpu_times()[:2]) for w in workers_p)
        cpu_b0 = sum(broker_p.cpu_times()[:2]) if broker_p is not None else 0.0
        import resource

        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        import uvloop  # the generator must cost far less per request than what it measures

        figures = uvloop.run(load(host, port, rps=rps, seconds=seconds))
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        n = max(1, figures["requests"])
        figures["api_cpu_us_per_req"] = round((sum(api_p.cpu_times()[:2]) - cpu_api0) / n * 1e6, 1)
        figures["worker_cpu_us_per_req"] = round(
            (sum(sum(w.cpu_times()[:2]) for w in workers_p) - cpu_w0) / n * 1e6, 1)
        if broker_p is not None:
            figures["broker_cpu_us_per_req"] = round((sum(broker_p.cpu_times()[:2]) - cpu_b0) / n * 1e6, 1)
        figures["loadgen_cpu_us_per_req"] = round(
            (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / n * 1e6, 1)
        import httpx

        status = httpx.get(f"http://{host}:{port}/v1/risk/status", timeout=5).json()
        figures["api_counts"] = {k: status.get(k) for k in ("direct", "stream", "timeout", "unavailable", "degraded",
                                                            "cached")}
        figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
        cl.check_workers()
    finally:
        if api is not None and api.poll() is None:
            os.kill(api.pid, signal.SIGTERM)
            try:
                api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(api.pid, signal.SIGKILL)
        cl.stop()
        if os.environ.get("BENCH_API_KEEP"):  # keep the logs (broker, worker, API) for a look afterwards
            print(f"bench_api_score: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    budget = float(os.environ.get("BENCH_API_BUDGET_MS") or _budget())
    return {**figures, "rps_target": rps, "seconds": seconds, "budget_ms": budget, "path": path,
            "workers": workers}


def _budget() -> float:
    from fuelcard.settings import load_settings

    return float(load_settings().score_budget_ms)

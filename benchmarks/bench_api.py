"""``make bench BENCH=api``: the serving layer under load on loopback, plus the dashboard's first render.

A server process (``python -m serving.testing serve``) simulates a network, loads it into an embedded
warehouse, replays decisions and points through the real cores, trains the models with the real jobs and
serves the API with uvicorn on 127.0.0.1. This process is the load generator: an open loop at ``RATE`` requests/s
spread round-robin over the endpoints (each request is sent at its scheduled time whatever the previous ones
did, so a slow server shows up as latency, not as a lower send rate). Latency is measured per
request from its scheduled send time to the full response (so time spent waiting for one of the 32 keep-alive
connections counts: no coordinated omission). Then headless Chromium loads the dashboard and reports its own
first-render time.

Environment: ``BENCH_API_HTTP_PORT`` (default 18160), ``BENCH_API_CDP_PORT`` (Chromium's DevTools, 18161),
``BENCH_API_LOOP_WATCH_MS`` (default 20; 0 = off): the server runs the event-loop stall detector
(``serving.loopwatch``) with this threshold and the result reports the stalls seen during the timed load
(``loop_stalls``: count, total/worst ms, and where the loop thread's time went: on a CPU, waiting for one, or
blocked, e.g. on the GIL), ``BENCH_SECONDS`` (default 30).

Result: ``{"rps": R, "target_rps": 300, "endpoints": {"<name>": {"p50_ms": a, "p99_ms": b, "n": n}},
"errors": 0, "model_p99_ms": worst model endpoint p99, "dashboard_first_render_ms": ms, ...}``.
Target: p99 <= 20 ms at 300 requests/s for the model endpoints.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

RATE = 300.0
PORT = 18160
CDP_PORT = 18161
MODEL_ENDPOINTS = {"churn_member", "churn_segments", "churn_segment_members", "pricing_recommendations",
                   "demand_forecast", "demand_replenishment", "sites_recommendations", "sites_station"}


def _endpoints(base: str, keys: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    with httpx.Client(base_url=base, timeout=30) as c:
        members = c.get("/v1/churn/segments/members?limit=200", headers={"X-API-Key": keys["marketing"]}).json()
        ids = [m["member_id"] for m in members.get("items", [])] or ["M0000001"]
        data = c.get("/v1/dashboard/data", headers={"X-API-Key": keys["analyst"]}).json()
        stations = [s["station_id"] for s in data["panels"]["stations_map"]["rows"]] or ["S0001"]
    out = []
    for i in range(40):
        m, s = ids[i % len(ids)], stations[i % len(stations)]
        out += [
            ("churn_member", f"/v1/churn/members/{m}", {"X-API-Key": keys["marketing"]}),
            ("churn_segments", "/v1/churn/segments", {"X-API-Key": keys["marketing"]}),
            ("churn_segment_members", f"/v1/churn/segments/members?limit=20&offset={i}",
             {"X-API-Key": keys["marketing"]}),
            ("pricing_recommendations", f"/v1/pricing/recommendations?station_id={s}", {"X-API-Key": keys["analyst"]}),
            ("demand_forecast", f"/v1/demand/forecast?station_id={s}&days=30", {"X-API-Key": keys["analyst"]}),
            ("demand_replenishment", f"/v1/demand/replenishment?station_id={s}", {"X-API-Key": keys["analyst"]}),
            ("sites_recommendations", "/v1/sites/recommendations?k=10", {"X-API-Key": keys["analyst"]}),
            ("sites_station", f"/v1/sites/stations/{s}", {"X-API-Key": keys["analyst"]}),
        ]
    return out


class _Conn:
    """One keep-alive HTTP/1.1 connection with pre-encoded requests (a load generator must cost far less per
    request than the server it measures; a general HTTP client does not)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _raw(path: str, headers: dict[str, str], host: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _load(base: str, plan: list[tuple[str, str, dict[str, str]]], seconds: float, rate: float) -> dict:
    host, port = base.split("://", 1)[1].split(":")
    raws = [(name, _raw(path, headers, f"{host}:{port}")) for name, path, headers in plan]
    lat: dict[str, list[float]] = {}
    status: dict[str, int] = {}
    errors = 0
    idle: list[_Conn] = [_Conn(host, int(port)) for _ in range(32)]
    waiters: asyncio.Queue[_Conn] = asyncio.Queue()
    for c in idle:
        waiters.put_nowait(c)

    async def one(name: str, raw: bytes, record: bool = True, due: float | None = None) -> None:
        nonlocal errors
        t0 = due if due is not None else time.perf_counter()
        conn = await waiters.get()
        try:
            code = await asyncio.wait_for(conn.request(raw), timeout=10)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            conn.close()
            code = 0
        dt = (time.perf_counter() - t0) * 1000
        waiters.put_nowait(conn)
        if not record:
            return
        status[str(code)] = status.get(str(code), 0) + 1
        if code == 200:
            lat.setdefault(name, []).append(dt)
        else:
            errors += 1

    # warm-up: every distinct request once (loads each model view, fills connection pool)
    await asyncio.gather(*(one(name, raw, record=False) for name, raw in raws))
    tasks = []
    t0 = time.time()
    start = time.perf_counter()
    n = int(seconds * rate)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        name, raw = raws[i % len(raws)]
        tasks.append(asyncio.create_task(one(name, raw, due=due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for c in idle:
        c.close()
    return {"lat": lat, "errors": errors, "sent": n, "elapsed": elapsed, "status": status, "t0": t0,
            "t1": time.time()}


def _stalls(path: Path, t0: float, t1: float) -> dict:
    """The server's event-loop stalls (``serving.loopwatch`` records) that ended during the timed load."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if t0 <= r.get("at", 0) <= t1 + 0.5:
                rows.append(r)
    ms = sorted(float(r["stall_ms"]) for r in rows)
    out = {"count": len(ms), "total_ms": round(sum(ms), 1), "max_ms": ms[-1] if ms else 0.0,
           "over_100ms": sum(1 for m in ms if m > 100)}
    for k in ("on_cpu_ms", "runqueue_ms", "blocked_ms"):
        out[k] = round(sum(float(r.get(k, 0.0)) for r in rows), 1)
    out["gc_ms"] = round(sum(d for r in rows for _, d in r.get("gc", [])), 1)
    return out


def run(seconds: float | None) -> dict:
    """Start the server, load it for ``seconds`` (default 30) at 300 req/s, measure the dashboard render."""
    seconds = float(seconds or 30.0)
    port = int(os.environ.get("BENCH_API_HTTP_PORT", PORT))
    cdp_port = int(os.environ.get("BENCH_API_CDP_PORT", CDP_PORT))
    root = Path(tempfile.mkdtemp(prefix="fuelcard-bench-api-"))
    base = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("w")
    watch_ms = float(os.environ.get("BENCH_API_LOOP_WATCH_MS", "20") or 0)
    stall_file = root / "loop_stalls.jsonl"
    env = dict(os.environ)
    if watch_ms > 0:
        env.update(FUELCARD_LOOP_WATCH_MS=str(watch_ms), FUELCARD_LOOP_WATCH_FILE=str(stall_file))
    proc = subprocess.Popen([sys.executable, "-m", "serving.testing", "serve", "--root", str(root),  # noqa: S603
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[1], env=env)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bench server exited; see {root / 'server.log'}")
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200 and (root / "env.json").exists():
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("bench server did not become ready")
        info = json.loads((root / "env.json").read_text())
        keys = info.pop("keys")
        plan = _endpoints(base, keys)
        import resource

        import psutil

        server = psutil.Process(proc.pid)
        cpu0, ru0 = sum(server.cpu_times()[:2]), resource.getrusage(resource.RUSAGE_SELF)
        import uvloop  # the generator must cost far less per request than what it measures

        res = uvloop.run(_load(base, plan, seconds, RATE))
        stalls = _stalls(stall_file, res["t0"], res["t1"]) if watch_ms > 0 else None
        cpu1, ru1 = sum(server.cpu_times()[:2]), resource.getrusage(resource.RUSAGE_SELF)
        n_req = max(1, res["sent"])
        endpoints = {}
        for name, values in sorted(res["lat"].items()):
            a = np.asarray(values)
            endpoints[name] = {"p50_ms": round(float(np.percentile(a, 50)), 2),
                               "p99_ms": round(float(np.percentile(a, 99)), 2), "n": len(a)}
        render: dict = {}
        try:
            from serving.testing import Chromium, first_render_ms

            with Chromium(cdp_port, root / "chromium-profile") as cdp:
                first_render_ms(cdp, f"{base}/dashboard/#key={keys['analyst']}")  # warms the 30 s cache
                render = first_render_ms(cdp, f"{base}/dashboard/#key={keys['analyst']}")
        except Exception as exc:  # noqa: BLE001 - reported in the result, the API figures still stand
            render = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        model_p99 = max((v["p99_ms"] for k, v in endpoints.items() if k in MODEL_ENDPOINTS), default=None)
        return {
            "rps": round(res["sent"] / res["elapsed"], 1),
            "target_rps": RATE,
            "seconds": round(res["elapsed"], 1),
            "endpoints": endpoints,
            "errors": res["errors"],
            "status": res["status"],
            "model_p99_ms": model_p99,
            "model_p99_target_ms": 20.0,
            "dashboard_first_render_ms": render.get("render_ms"),
            "dashboard_render_error": render.get("error"),
            "transactions": info.get("transactions"),
            "models": info.get("trained"),
            # CPU per request of the server and of this load generator, over the timed load only
            "server_cpu_us_per_req": round((cpu1 - cpu0) / n_req * 1e6, 1),
            "loadgen_cpu_us_per_req": round((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
                                            / n_req * 1e6, 1),
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "loop_stalls": stalls,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

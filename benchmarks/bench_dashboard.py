"""Dashboard benchmark: the web dashboard's first render in headless Chromium over 10 M transactions.

``python -m benchmarks dashboard`` (``make bench BENCH=dashboard``):

1. **Warehouse**: 10 M transactions (+ their risk decisions and points entries) generated and inserted exactly as
   ``benchmarks/bench_warehouse.py`` does (its generator, loader path and helpers are imported, not copied), plus
   what a dashboard also shows and that benchmark does not need: stations spread over a map (three station
   types), members with home locations (member density), and the station × product × day sales the window is
   taken from. Built once into ``var/bench-dashboard/tx<N>/warehouse`` and reused (a ``built.json`` marks a
   complete build; delete the directory to rebuild). ``BENCH_DASHBOARD_TX`` scales it down while iterating.
   The model panels need promoted models: churn, pricing, demand and sites are trained once by the real jobs on a
   small simulated network (``serving.testing.build_env``) into ``var/bench-dashboard/models/registry``.
2. **API**: ``fuelcard serve`` in its own process on 127.0.0.1 over that warehouse and a copy of that registry —
   the way the app serves the dashboard in embedded mode (it prints the dashboard URL with a demo key; the
   benchmark reads it from there). Models load lazily, so the first view also pays for loading them.
3. **Browser**: Debian's headless Chromium through the DevTools protocol (``serving.testing.Chromium``, as the
   browser test). Chromium is started first and navigates the moment the server answers ``/health``, so the
   *cold* figure is the first load after start (the server's start-up warm-up has no head start); *warm* is the
   p50 of ``WARM_RELOADS`` fresh page loads after it.

First render = navigation start → every panel drawn (``document.body.dataset.ready`` set by the page once all
panel data arrived and was drawn; ``performance.now()`` at that moment, whose origin is the navigation start).

Prints ``{"bench": "dashboard", "transactions": N, "first_render_ms": cold, "warm_render_ms": p50,
"panels": {name: ms drawn after navigation start}, "panel_states": {...}, ...}``. Target: cold <= 1,000 ms at 10 M.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "var" / "bench-dashboard"
API_PORT = 19610
CDP_PORT = 19611
WARM_RELOADS = 5
TARGET_MS = 1000.0


def _tx_count() -> int:
    from benchmarks.bench_warehouse import FULL_T

    return int(os.environ.get("BENCH_DASHBOARD_TX") or FULL_T)


# ---------------------------------------------------------------- the warehouse (built once, cached)


def _map_dimensions(wh, rng: np.random.Generator) -> None:
    """Stations spread over a city region with types, and members living around them (bench_warehouse puts every
    station on one point and has no members: enough for its queries, not for a map)."""
    from benchmarks.bench_warehouse import CARDS, STATIONS
    from warehouse.synth import REGIONS

    st = [f"S{i:04d}" for i in range(STATIONS)]
    kind = rng.choice(np.array(["urban", "highway", "rural"]), STATIONS, p=[0.6, 0.25, 0.15])
    spread = np.where(kind == "urban", 0.12, np.where(kind == "highway", 0.45, 0.7))
    lat = 30.25 + rng.normal(0, 1, STATIONS) * spread
    lon = 120.15 + rng.normal(0, 1, STATIONS) * spread * 1.2
    wh.execute("TRUNCATE TABLE IF EXISTS dim_station")
    wh.insert_df("dim_station", pd.DataFrame({
        "station_id": st, "name": [f"Station {i}" for i in range(STATIONS)],
        "region": [REGIONS[i % 4] for i in range(STATIONS)], "city": "Hangzhou", "station_type": kind,
        "lat": lat, "lon": lon}))
    members = CARDS // 2
    home = rng.integers(0, STATIONS, members)
    wh.insert_df("dim_member", pd.DataFrame({
        "member_id": [f"M{i:07d}" for i in range(members)], "tier": "standard",
        "home_lat": lat[home] + rng.normal(0, 0.03, members), "home_lon": lon[home] + rng.normal(0, 0.03, members),
        "region": REGIONS[home % 4], "id_number_masked": "1101**********1234", "phone_masked": "138****5678"}))


def _load(wh, total: int) -> dict:
    """bench_warehouse's data set (same generator, same insert path), then the map dimensions and station sales."""
    from benchmarks.bench_warehouse import CARDS, CHUNK, DAYS, STATIONS, _decisions, _dimensions, _points
    from warehouse.loader import transactions_to_fact
    from warehouse.synth import transactions

    rng = np.random.default_rng(42)
    wh.migrate()
    _dimensions(wh, rng)
    _map_dimensions(wh, rng)
    rows = 0
    t0 = time.perf_counter()
    for offset in range(0, total, CHUNK):
        n = min(CHUNK, total - offset)
        start = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=DAYS * offset / total)
        tx = transactions(n, seed=offset, start=start, days=DAYS * n / total, stations=STATIONS, cards=CARDS,
                          id_offset=offset)
        rows += wh.insert_df("fact_transactions", transactions_to_fact(tx))
        rows += wh.insert_df("fact_risk_decisions", _decisions(tx, rng))
        rows += wh.insert_df("fact_points_ledger", _points(tx))
        print(f"bench_dashboard: {offset + n:,}/{total:,} transactions loaded", file=sys.stderr, flush=True)
    # station x product x day sales (the batch models' input), derived from the sales rollup
    wh.execute("INSERT INTO fact_station_sales (date, station_id, product, litres, transactions, card_litres) "
               "SELECT date, station_id, product, sum(litres_sum), toUInt32(sum(captured)), sum(litres_sum) "
               "FROM rollup_sales_daily GROUP BY date, station_id, product")
    return {"rows": rows, "load_s": round(time.perf_counter() - t0, 1)}


def build_warehouse(total: int) -> Path:
    """The cached warehouse directory for ``total`` transactions (built now unless a complete build exists)."""
    from warehouse import connect

    base = CACHE_DIR / f"tx{total}"
    path = base / "warehouse"
    marker = base / "built.json"
    if marker.exists():
        return path
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    # chdb allows one data directory per process: build in a child process so this one stays free to read it
    code = ("import json,sys; from benchmarks.bench_dashboard import _load; from warehouse import connect; "
            f"wh = connect('chdb://{path}'); out = _load(wh, {total}); "
            "out['transactions'] = int(wh.query_value('SELECT count() FROM fact_transactions')); wh.close(); "
            "print(json.dumps(out))")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if res.returncode != 0:
        raise RuntimeError(f"building the bench warehouse failed: {res.stderr[-2000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["build_s"] = round(time.perf_counter() - t0, 1)
    info["load_avg_1m"] = round(os.getloadavg()[0], 1)
    marker.write_text(json.dumps(info))
    _ = connect  # imported for the error early if the warehouse package is broken
    return path


def build_models() -> Path:
    """A registry with promoted churn, pricing, demand and sites models (the model panels' inputs), trained once
    by the real jobs on a small simulated network (``serving.testing.build_env``) and reused."""
    base = CACHE_DIR / "models"
    registry = base / "registry"
    marker = base / "built.json"
    if marker.exists():
        return registry
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    work = base / "env"
    code = ("import json; from serving.testing import build_env; "
            f"env = build_env({str(work)!r}); print(json.dumps({{'trained': env.trained, 'failed': env.failed}}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if res.returncode != 0:
        raise RuntimeError(f"training the bench models failed: {res.stderr[-2000:]}")
    shutil.move(str(work / "registry"), str(registry))
    shutil.rmtree(work, ignore_errors=True)
    marker.write_text(res.stdout.strip().splitlines()[-1])
    return registry


# ---------------------------------------------------------------- the API and the browser


def _start_api(warehouse: Path, data_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``fuelcard serve`` over ``warehouse``; returns the process and the dashboard URL it printed (with a key)."""
    env = {**os.environ, "FUELCARD_WAREHOUSE_URL": f"chdb://{warehouse}", "FUELCARD_DATA_DIR": str(data_dir),
           "FUELCARD_ENV": "development", "FUELCARD_KAFKA_BOOTSTRAP": f"kafka://127.0.0.1:{API_PORT + 89}",
           "PYTHONUNBUFFERED": "1"}
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "fuelcard.cli", "serve", "--host", "127.0.0.1",  # noqa: S603
                             "--port", str(API_PORT)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"^dashboard\s+(\S+#key=\S+)$", log_path.read_text(), re.M)
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _stop(proc)
    raise RuntimeError(f"fuelcard serve did not print a dashboard URL: {log_path.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _wait_http(url: str, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer")


_READ = """(() => {
    const b = document.body;
    if (!b || !b.dataset.ready) return null;
    const panels = {}, states = {};
    document.querySelectorAll('[data-panel]').forEach(p => {
        panels[p.dataset.panel] = Number(p.dataset.drawnMs || 'NaN');
        states[p.dataset.panel] = (p.dataset.state || '') + (p.dataset.state === 'ok' ? '' :
            ': ' + p.innerText.replace(/\\s+/g, ' ').slice(0, 80));
    });
    return {ready: b.dataset.ready, render_ms: Number(b.dataset.renderMs), panels, states,
            timing: Object.assign({}, b.dataset),
            svg_marks: document.querySelectorAll('svg rect, svg path, svg circle').length,
            map_marks: document.querySelectorAll('[data-panel=stations_map] svg circle').length};
})()"""


def render_timing(cdp, url: str, timeout_s: float = 60) -> dict:
    """Navigate to ``url`` (fresh document) and return the page's own timing once every panel is drawn:
    ``render_ms`` (navigation start → every panel drawn and painted), ``panels`` (each panel's draw time),
    ``states``, ``timing`` (the page's data-* figures). Usable by any benchmark holding a DevTools client."""
    cdp.send("Page.navigate", url="about:blank")
    time.sleep(0.1)
    cdp.send("Page.navigate", url=url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = cdp.eval(_READ)
        if out:
            return out
        time.sleep(0.02)
    raise RuntimeError("the dashboard did not become ready: "
                       + str(cdp.eval("document.body && document.body.innerText.slice(0, 300)")))


def run(seconds: float | None) -> dict:
    """Build (or reuse) the warehouse, serve it, and time the dashboard in Chromium: cold, then warm."""
    from serving.testing import Chromium

    total = _tx_count()
    t0 = time.perf_counter()
    warehouse = build_warehouse(total)
    built = json.loads((warehouse.parent / "built.json").read_text())
    registry = build_models()
    models = json.loads((registry.parent / "built.json").read_text())
    build_s = round(time.perf_counter() - t0, 1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    shutil.copytree(registry, tmp / "data" / "registry")  # the API's FUELCARD_DATA_DIR/registry
    load_before = os.getloadavg()[0]
    try:
        with Chromium(CDP_PORT, tmp / "chromium-profile") as cdp:
            cdp.eval("1")  # the browser is up before the API starts: nothing is warmed ahead of the first load
            started = time.perf_counter()
            proc, url = _start_api(warehouse, tmp / "data", tmp / "api.log")
            try:
                _wait_http(url.split("/dashboard/")[0] + "/health")
                api_start_s = time.perf_counter() - started
                cold = render_timing(cdp, url)
                cpu0 = _cpu_s(proc.pid)
                warm = [render_timing(cdp, url) for _ in range(WARM_RELOADS)]
                cpu1 = _cpu_s(proc.pid)
                # a view the server has never computed (no start-up warm-up, no cache): the full query path
                uncached = render_timing(cdp, url + "&days=90")
                cpu = _cpu_s(proc.pid)
                shot = _screenshot(cdp, total)
            finally:
                _stop(proc)
        warm_ms = [w["render_ms"] for w in warm]
        p50 = statistics.median(warm_ms)
        return {
            "transactions": int(built.get("transactions") or total),
            "first_render_ms": round(cold["render_ms"], 1),
            "warm_render_ms": round(p50, 1),
            "warm_runs_ms": [round(v, 1) for v in warm_ms],
            "panels": {k: round(v, 1) for k, v in cold["panels"].items()},
            "panels_warm": {k: round(v, 1) for k, v in warm[warm_ms.index(p50)]["panels"].items()},
            "uncached_render_ms": round(uncached["render_ms"], 1),
            "uncached_server_compute_ms": _num(uncached["timing"].get("computeMs")),
            "cold_server_compute_ms": _num(cold["timing"].get("computeMs")),
            "cold_data_age_s": _num(cold["timing"].get("cachedS")),
            "panel_states": cold["states"],
            "timing_cold": {k: v for k, v in cold["timing"].items() if k.endswith("Ms")},
            "timing_uncached": {k: v for k, v in uncached["timing"].items() if k.endswith("Ms")},
            "svg_marks": cold["svg_marks"],
            "map_marks": cold["map_marks"],
            "models": models.get("trained"),
            "screenshot": shot,
            "api_start_s": round(api_start_s, 2),
            "api_cpu_s": cpu,
            # CPU of the API process (all threads, chdb included) per page load: what load does not distort
            "api_cpu_ms_per_warm_load": _per(cpu0, cpu1, WARM_RELOADS),
            "api_cpu_ms_uncached_load": _per(cpu1, cpu, 1),
            "warehouse_build_s": build_s,
            "warehouse": str(warehouse),
            "target_ms": TARGET_MS,
            "target_met": cold["render_ms"] <= TARGET_MS,
            "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _screenshot(cdp, total: int) -> str:
    """The last view (90 days) as a PNG under var/reports/ (after the timings, so it costs them nothing)."""
    import base64

    path = ROOT / "var" / "reports" / f"dashboard-bench-{total}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(cdp.send("Page.captureScreenshot", format="png",
                                               captureBeyondViewport=True)["data"]))
    return str(path.relative_to(ROOT))


def _per(a: float | None, b: float | None, n: int) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000 / n, 1)


def _num(v: str | None) -> float | None:
    try:
        return round(float(v), 1) if v not in (None, "", "undefined") else None
    except ValueError:
        return None


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the API process used so far (start-up included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, IndexError, ValueError):
        return None


if __name__ == "__main__":
    print(build_warehouse(_tx_count()))

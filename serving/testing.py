"""A small but real environment for the serving tests, the browser test and the API benchmark.

``build_env(root)`` simulates a network with the project's simulator, loads it into an embedded warehouse with
the warehouse's loader, replays the authorisations through the real risk engine and the captures/redemptions
through the real points core (the rows the stream sink would write), and trains the batch models with the
real training jobs into a registry under ``root``. Nothing here is a stand-in: each step calls the module
that production uses.

chdb allows one data directory per process; when this process already has another one open (another test
module got there first), the environment lives in its own *database* inside that directory instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fuelcard.settings import Settings

LEDGER_KIND = {"accrual": "earn", "reversal": "reverse", "redemption": "redeem", "expiry": "expire"}


@dataclass
class Env:
    """What :func:`build_env` made."""

    root: Path
    settings: Settings
    warehouse: Any
    registry_dir: Path
    sim_dir: Path
    trained: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    stations: list[str] = field(default_factory=list)


def open_warehouse(path: Path, *, database: str = "fuelcard") -> Any:
    """An embedded warehouse at ``path``; inside the process's existing chdb directory if it has one."""
    from warehouse.engine import ChdbWarehouse

    try:
        return ChdbWarehouse(f"chdb://{path}", Path(path), database=database)
    except Exception as exc:
        m = re.search(r"initialized with path '([^']+)'", str(exc))
        if not m:
            raise
        return ChdbWarehouse(f"chdb://{m.group(1)}", Path(m.group(1)), database=f"{database}_{path.name}")


def replay_decisions(wh: Any, tx: pd.DataFrame, *, artifacts_dir: Path | None = None) -> int:
    """Score every authorisation in time order with the speed layer's engine; insert the decisions."""
    from fuelcard.events import Authorisation
    from streams.engine import load_engine
    from warehouse.sink import decision_row

    engine = load_engine(artifacts_dir=artifacts_dir)
    state: dict[str, Any] = {}
    rows = []
    cols = ["tx_id", "ts", "card_id", "station_id", "product", "amount_fen", "litres", "terminal_id", "device_id",
            "lat", "lon", "region"]
    for r in tx.sort_values("ts")[cols].itertuples(index=False):
        auth = Authorisation(tx_id=r.tx_id, ts=pd.Timestamp(r.ts).to_pydatetime(), card_id=r.card_id,
                             station_id=r.station_id, product=r.product, amount_fen=int(r.amount_fen),
                             litres=float(r.litres) if pd.notna(r.litres) and r.litres > 0 else None,
                             terminal_id=r.terminal_id or None, device_id=r.device_id or None,
                             lat=float(r.lat), lon=float(r.lon), region=r.region or None)
        st, decision = engine.decide(state.get(r.card_id), auth)
        state[r.card_id] = st
        rows.append(decision_row(decision, station_id=r.station_id))
    return wh.insert_df("fact_risk_decisions", pd.DataFrame(rows))


def replay_points(wh: Any, tx: pd.DataFrame, members: pd.DataFrame, redemptions: pd.DataFrame) -> int:
    """Accrue points on captures and apply redemptions with the points core; insert the ledger lines."""
    from fuelcard import points as pts

    tiers = dict(zip(members["member_id"], members["tier"], strict=True))
    families = dict(zip(members["member_id"], members["family_id"], strict=True))
    reqs: list[tuple[Any, pts.PointsRequest]] = []
    cap = tx[(tx["status"].isin(["captured", "refunded"])) & tx["member_id"].notna() & (tx["member_id"] != "")]
    for r in cap.itertuples(index=False):
        acct = pts.account_id_for(r.member_id, families.get(r.member_id) or None)
        reqs.append((r.ts, pts.PointsRequest(kind="accrual", request_id=r.tx_id, tx_id=r.tx_id,
                                             ts=pd.Timestamp(r.ts).to_pydatetime(), account_id=acct,
                                             member_id=r.member_id, tier=tiers.get(r.member_id, "standard"),
                                             product=r.product, amount_fen=int(r.amount_fen))))
    for r in redemptions.itertuples(index=False):
        acct = pts.account_id_for(r.member_id, families.get(r.member_id) or None)
        reqs.append((r.ts, pts.PointsRequest(kind="redemption", request_id=r.redemption_id,
                                             ts=pd.Timestamp(r.ts).to_pydatetime(), account_id=acct,
                                             member_id=r.member_id, points=int(r.points), item=str(r.item))))
    reqs.sort(key=lambda x: pd.Timestamp(x[0]))
    accounts: dict[str, Any] = {}
    rows = []
    for _, req in reqs:
        st, moves = pts.apply(accounts.get(req.account_id), req)
        accounts[req.account_id] = st
        for m in moves:
            if m.kind == "rejected":
                continue
            rows.append({"entry_id": m.movement_id, "ts": m.ts, "member_id": m.member_id or req.member_id or "",
                         "card_id": "", "tx_id": m.tx_id or "", "kind": LEDGER_KIND.get(m.kind, m.kind),
                         "points": int(m.points), "note": m.reason[:100]})
    return wh.insert_df("fact_points_ledger", pd.DataFrame(rows)) if rows else 0


def build_env(root: str | Path, *, seed: int = 5, days: int = 45, stations: int = 8, members: int = 300,
              kinds: tuple[str, ...] = ("churn", "pricing", "demand", "sites"), progress: bool = False) -> Env:
    """Simulate, load, replay and train under ``root`` (a fresh directory). Returns the :class:`Env`."""
    from fuelcard.commands import train_jobs as tj
    from fuelcard.simulator import SimConfig, simulate, write
    from models.registry import Registry
    from warehouse.loader import load_dir

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    sim_dir = root / "sim"
    frames = simulate(SimConfig(seed=seed, days=days, stations=stations, members=members))
    write(frames, sim_dir)
    timings["simulate"] = time.perf_counter() - t
    # No broker in these environments: the risk endpoint answers degraded; port 18197 is never bound.
    settings = Settings(data_dir=root, warehouse_url=f"chdb://{root / 'warehouse'}", env="test",
                        kafka_bootstrap="kafka://127.0.0.1:18197")
    t = time.perf_counter()
    wh = open_warehouse(root / "warehouse")
    load_dir(wh, sim_dir, progress=progress, settings=settings)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    tx = pd.read_parquet(sim_dir / "transactions.parquet")
    mem = pd.read_parquet(sim_dir / "members.parquet")
    red = pd.read_parquet(sim_dir / "redemptions.parquet")
    replay_decisions(wh, tx)
    replay_points(wh, tx, mem, red)
    timings["replay"] = time.perf_counter() - t
    registry_dir = root / "registry"
    reg = Registry(registry_dir)
    source = tj.ParquetSource(sim_dir)
    # No ground-truth evaluation here (it only adds metrics; serving needs the models and their outputs).
    ctx = tj.TrainContext(source=source, registry=reg, as_of=tj.default_as_of(source), window_days=365, seed=seed,
                          truth_path=None)
    env = Env(root=root, settings=settings, warehouse=wh, registry_dir=registry_dir, sim_dir=sim_dir,
              timings=timings, members=sorted(mem["member_id"].astype(str)),
              stations=sorted(pd.read_parquet(sim_dir / "stations.parquet")["station_id"].astype(str)))
    for kind in kinds:
        t = time.perf_counter()
        spec = tj.SPECS.get(kind)
        if spec is None or not spec.available():
            env.failed[kind] = "model code not available"
            continue
        try:
            out = tj.run_job(ctx, kind, promote=True)
            env.trained[kind] = out.version
        except Exception as exc:  # noqa: BLE001 - a model that cannot train yet answers 503; recorded
            env.failed[kind] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        timings[f"train_{kind}"] = time.perf_counter() - t
    return env


def reopen_env(root: str | Path) -> Env:
    """The environment :func:`build_env` left under ``root`` (same settings, warehouse and registry)."""
    root = Path(root)
    settings = Settings(data_dir=root, warehouse_url=f"chdb://{root / 'warehouse'}", env="test",
                        kafka_bootstrap="kafka://127.0.0.1:18197")
    return Env(root=root, settings=settings, warehouse=open_warehouse(root / "warehouse"),
               registry_dir=root / "registry", sim_dir=root / "sim")


_SHARED: dict[str, Env] = {}


def shared_env() -> Env:
    """One :func:`build_env` per process (tests in several modules share it; chdb allows one directory)."""
    if "env" not in _SHARED:
        import tempfile

        _SHARED["env"] = build_env(Path(tempfile.mkdtemp(prefix="fuelcard-serving-")))
    return _SHARED["env"]


def make_app(env: Env, **overrides: Any) -> Any:
    """The real app factory on an environment's warehouse connection and registry."""
    from models.registry import Registry
    from serving.adapters import WarehouseSql
    from serving.app import create_app

    kwargs: dict[str, Any] = {"sql": WarehouseSql(env.warehouse), "registry": Registry(env.registry_dir)}
    kwargs.update(overrides)
    settings = kwargs.pop("settings", env.settings)
    return create_app(settings, **kwargs)


class ThreadServer:
    """uvicorn serving an app from a background thread of this process (for the browser test)."""

    def __init__(self, app: Any, port: int, host: str = "127.0.0.1") -> None:
        import threading

        import uvicorn

        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)

    def __enter__(self) -> ThreadServer:
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"server on {self.url} did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# ---------------------------------------------------------------- headless Chromium (browser test, benchmark)

CHROMIUM = "/usr/bin/chromium"


class CDP:
    """Just enough of a websocket client (RFC 6455, client-masked text frames) to speak DevTools protocol."""

    def __init__(self, ws_url: str) -> None:
        rest = ws_url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("devtools socket closed")
            buf += chunk
        return buf

    def _recv_message(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            parts.append(self._recv_exact(n))
            if b0 & 0x80:
                return json.loads(b"".join(parts))

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        payload = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                  bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                  bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
        while True:
            msg = self._recv_message()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result", {})

    def eval(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return res.get("result", {}).get("value")

    def close(self) -> None:
        self.sock.close()


class Chromium:
    """Debian's headless Chromium with a fresh profile and a DevTools port; ``with Chromium(port) as cdp``."""

    def __init__(self, port: int, profile: Path, *, width: int = 1400, height: int = 3000) -> None:
        self.port, self.profile, self.size = port, Path(profile), (width, height)
        self.proc: subprocess.Popen[bytes] | None = None
        self.cdp: CDP | None = None

    def __enter__(self) -> CDP:
        if not Path(CHROMIUM).exists():
            raise RuntimeError("Debian chromium is required (infra/scripts/install-system-deps.sh)")
        self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={self.profile}", f"--remote-debugging-port={self.port}",
             "--remote-allow-origins=*", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:  # noqa: S310
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
                if targets:
                    self.cdp = CDP(targets[0]["webSocketDebuggerUrl"])
                    self.cdp.send("Page.enable")
                    self.cdp.send("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                                  deviceScaleFactor=1, mobile=False)
                    return self.cdp
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited")
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("chromium did not open its DevTools endpoint")

    def __exit__(self, *exc: object) -> None:
        if self.cdp is not None:
            self.cdp.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def wait_rendered(cdp: CDP, timeout_s: float = 30) -> str:
    """Wait until the dashboard says it rendered ("1") or failed ("error")."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = cdp.eval("document.body && document.body.dataset.rendered")
        if state in ("1", "error"):
            return state
        time.sleep(0.05)
    return str(state)


def first_render_ms(cdp: CDP, url: str) -> dict[str, Any]:
    """Load the dashboard fresh and return the browser's own timing of the first full draw."""
    cdp.send("Page.navigate", url="about:blank")
    time.sleep(0.2)
    cdp.send("Page.navigate", url=url)
    time.sleep(0.1)
    state = wait_rendered(cdp)
    timing = cdp.eval("Object.assign({}, document.body.dataset)") or {}
    return {"state": state, "render_ms": float(timing.get("renderMs") or "nan"), "timing": timing}


def main(argv: list[str] | None = None) -> None:
    """``python -m serving.testing serve --root DIR --port P``: build an environment and serve it (benchmarks)."""
    import argparse

    import uvicorn

    p = argparse.ArgumentParser(prog="serving.testing")
    p.add_argument("command", choices=["serve"])
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stations", type=int, default=12)
    p.add_argument("--members", type=int, default=600)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--reuse", action="store_true",
                   help="serve the environment an earlier run built under --root (no simulation or training)")
    args = p.parse_args(argv)
    root = Path(args.root)
    if args.reuse and (root / "env.json").exists():
        env = reopen_env(root)
        info = {k: v for k, v in json.loads((root / "env.json").read_text()).items() if k != "keys"}
    else:
        env = build_env(root, stations=args.stations, members=args.members, days=args.days)
        info = {"trained": env.trained, "failed": env.failed, "timings": env.timings,
                "transactions": int(env.warehouse.query_value("SELECT count() FROM fact_transactions"))}
    app = make_app(env)
    (Path(args.root) / "env.json").write_text(json.dumps({**info, "keys": app.state.services.demo_keys}))
    from serving.app import profile_from_env

    profile_from_env(app)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, proxy_headers=False)


if __name__ == "__main__":
    main()

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

import re
import time
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
    truth = sim_dir / "ground_truth" / "truth.json"
    ctx = tj.TrainContext(source=source, registry=reg, as_of=tj.default_as_of(source), window_days=365, seed=seed,
                          truth_path=truth if truth.exists() else None)
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

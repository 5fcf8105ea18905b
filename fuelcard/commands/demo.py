"""`fuelcard demo` and `fuelcard up`: the whole system on embedded defaults.

``demo`` is bounded (a few minutes): simulate a network, load it into the embedded warehouse, backtest and
report the fraud model, train every model into the registry, stream the last simulated day through the real
broker and Faust agents, exercise every API endpoint once, print a summary and exit 0.

``up`` keeps the same system running (API + dashboard, agents, a steady simulated feed) until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer

from fuelcard.commands.common import CliError
from fuelcard.settings import Settings

app = typer.Typer()


@dataclass
class _Steps:
    """Runs named steps, timing each; the first failure stops the demo with a readable line."""

    total: int
    done: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, title: str, fn: Callable[[], Any]) -> Any:
        self.done += 1
        typer.secho(f"[{self.done}/{self.total}] {title} ...", fg=typer.colors.CYAN, err=True)
        started = time.perf_counter()
        try:
            result = fn()
        except CliError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CliError(f"demo step '{title}' failed: {type(exc).__name__}: {first}") from exc
        self.timings[title] = round(time.perf_counter() - started, 1)
        typer.secho(f"      done in {self.timings[title]} s", fg=typer.colors.GREEN, err=True)
        return result


def _fuelcard(*args: str, env: dict[str, str] | None = None) -> str:
    """Run a fuelcard sub-command in a child process (those that do not touch the warehouse)."""
    proc = subprocess.run([sys.executable, "-m", "fuelcard.cli", *args], capture_output=True, text=True,  # noqa: S603
                          env=env, check=False)
    if proc.returncode != 0:
        raise CliError(f"fuelcard {' '.join(args[:2])}: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("var/demo"), help="Working directory (recreated)"),
    seed: int = typer.Option(7, help="Simulation seed"),
    days: int = typer.Option(45, help="Simulated days (the fraud backtest needs at least 45)"),
    stations: int = typer.Option(60, help="Stations"),
    members: int = typer.Option(6000, help="Members"),
    workers: int = typer.Option(2, help="Faust worker processes for the streamed day"),
) -> None:
    """Run the whole system once on embedded defaults and print what happened."""
    import pandas as pd

    from fuelcard.simulator import SimConfig, simulate, write

    if days < 45:
        raise CliError("--days must be at least 45 (30 train + 7 label delay + 7 test + 1 streamed day)")
    out = out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    sim_dir = out / "sim"
    reports = out / "reports"
    settings = Settings(data_dir=out, warehouse_url=f"chdb://{out / 'warehouse'}", env="development")
    steps = _Steps(total=7)
    summary: dict[str, Any] = {}

    # 1. simulate ------------------------------------------------------------------------------------
    def _simulate() -> dict[str, Any]:
        frames = simulate(SimConfig(seed=seed, days=days, stations=stations, members=members), progress=True)
        write(frames, sim_dir)
        return frames

    frames = steps.run(f"simulate {days} days, {stations} stations, {members:,} members", _simulate)
    tx: pd.DataFrame = frames["transactions.parquet"]
    summary["simulation"] = {"transactions": len(tx), "fraud": int(tx["is_fraud"].sum()),
                             "members": len(frames["members.parquet"]), "stations": stations}

    # 2. warehouse -----------------------------------------------------------------------------------
    import warehouse
    from warehouse.loader import load_dir

    wh = warehouse.connect(settings.warehouse_url)
    try:
        loaded = steps.run("load the embedded ClickHouse warehouse (chdb)",
                           lambda: load_dir(wh, sim_dir, progress=True, settings=settings))
        summary["warehouse_rows"] = loaded

        # 3. fraud backtest + report (30 train days, 7 days label delay, 7 test days) ----------------
        first = pd.Timestamp(tx["ts"].min()).date()
        train_start, train_end = first, first + timedelta(days=29)
        test_start, test_end = train_end + timedelta(days=8), train_end + timedelta(days=14)
        fraud_dir = reports / "fraud"

        def _fraud() -> dict[str, Any]:
            _fuelcard("fraud", "backtest", "--transactions", str(sim_dir / "transactions.parquet"),
                      "--train-start", str(train_start), "--train-end", str(train_end),
                      "--test-start", str(test_start), "--test-end", str(test_end),
                      "--label-delay-days", "7", "--out", str(fraud_dir / "scores.csv"),
                      "--report", str(fraud_dir))
            return json.loads((fraud_dir / "metrics.json").read_text())

        summary["fraud_backtest"] = steps.run(
            f"fraud backtest: train {train_start}..{train_end}, delay 7 d, test {test_start}..{test_end}", _fraud)

        # 4. train every model from the warehouse into the registry -----------------------------------
        summary["models"] = steps.run("train churn, pricing, demand, sites, fraud into the registry",
                                      lambda: _train_all(wh, settings.registry_dir, sim_dir, reports, seed))

        # 5. stream the last simulated day through the broker and the Faust agents --------------------
        # The stream keeps running through step 6, so the API's risk endpoint is answered by it (the risk
        # workers' direct ports, the demo broker for the Kafka path): not by the degraded fallback.
        stream_port, direct_base = 19250, 19270
        running: dict[str, Any] = {}

        def _stream() -> dict[str, Any]:
            from streams.demo import demo_cluster, stream_demo_day

            last_day = pd.Timestamp(tx["ts"].max()).normalize()
            day = tx[pd.to_datetime(tx["ts"], utc=True) >= last_day].reset_index(drop=True)
            cl = running["cluster"] = stack.enter_context(demo_cluster(
                settings, out / "stream", cards=frames["cards.parquet"], members=frames["members.parquet"],
                workers=workers, port=stream_port, direct_port_base=direct_base))
            return stream_demo_day(cl, out / "stream", day, recharges=frames.get("recharges.parquet"),
                                   redemptions=frames.get("redemptions.parquet"), warehouse=wh, rate=400.0)

        # 6. API: exercise every endpoint once, the risk endpoint against the running stream ---------------
        def _api() -> dict[str, Any]:
            from fastapi.testclient import TestClient

            from models.registry import Registry
            from serving.adapters import WarehouseSql
            from serving.app import create_app
            from serving.demo import exercise_all
            from serving.risk import create_router

            cl = running["cluster"]
            # The demo's broker, and a time budget that does not turn the first call (which opens the
            # connection to the worker) into a degraded answer on a busy machine: the demo shows where the
            # decision comes from, the latency target is the api_score benchmark's business.
            api_settings = settings.model_copy(update={"kafka_bootstrap": cl.url, "score_budget_ms": 2000.0})
            router = create_router(api_settings, prefix=cl.prefix,
                                   direct_ports=tuple(direct_base + k for k in range(workers)))
            api = create_app(api_settings, sql=WarehouseSql(wh), registry=Registry(settings.registry_dir),
                             risk_router=router)
            with TestClient(api) as client:
                return exercise_all(client, api.state.services.demo_keys)

        with contextlib.ExitStack() as stack:  # the stream stops (by PID) after step 6
            summary["stream"] = steps.run("stream the last day: noida-db broker + Faust risk/points/sink agents",
                                          _stream)
            summary["api"] = steps.run("exercise every API endpoint with its least-privileged demo key "
                                       "(risk: the running stream)", _api)

        # 7. dashboard figures from the rollups ------------------------------------------------------------
        summary["rollups"] = steps.run("read the dashboard rollups", lambda: _rollups(wh))
    finally:
        wh.close()

    summary["timings_s"] = steps.timings
    summary["reports"] = {"fraud": str(fraud_dir), "models": str(reports), "registry": str(settings.registry_dir),
                          "warehouse": str(out / "warehouse")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary, out)


_HEADLINES = {
    "churn": ("concordance", "auc_90d", "horizon_days", "test_events"),
    "pricing": ("r2", "elasticity_median", "true_profit_uplift", "predicted_profit_uplift"),
    "demand": ("accuracy", "wape", "mase", "mase_snaive", "coverage80", "leak_alerts"),
    "sites": ("topk_captured_unserved", "baseline_captured_unserved", "topk_vs_baseline_ratio"),
    "fraud": ("auc_roc", "average_precision", "review_fpr", "review_recall", "review_amount_recall"),
}


def _train_all(wh: Any, registry_dir: Path, sim_dir: Path, reports: Path, seed: int) -> dict[str, Any]:
    """Train every model kind from the warehouse into the registry (promoted); returns version and headline
    metrics per kind. Shared by ``demo`` and ``up``."""
    from fuelcard.commands import train_jobs as tj
    from models.registry import Registry

    source = tj.WarehouseSource(wh)
    ctx = tj.TrainContext(source=source, registry=Registry(registry_dir), as_of=tj.default_as_of(source),
                          seed=seed, truth_path=sim_dir / "ground_truth" / "truth.json", warehouse=wh,
                          reports_dir=reports)
    trained = {}
    for kind in tj.KINDS:
        outcome = tj.run_job(ctx, kind, promote=True)
        trained[kind] = {"version": outcome.version, "metrics": _headline(outcome.metrics, kind)}
        typer.echo(f"      {kind:8s} {outcome.version}  {trained[kind]['metrics']}", err=True)
    return trained


def _headline(metrics: dict[str, Any], kind: str = "", n: int = 6) -> dict[str, Any]:
    """The metrics worth a glance for a model kind (its preferred ones first, then any numbers)."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    keys = [k for k in _HEADLINES.get(kind, ()) if k in numeric] or list(numeric)[:n]
    return {k: (round(numeric[k], 4) if isinstance(numeric[k], float) else numeric[k]) for k in keys[:n]}


def _rollups(wh: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("risk_kpis_daily", "sales_daily", "points_daily", "tank_alerts"):
        try:
            df = wh.named_query(name)
        except Exception as exc:  # noqa: BLE001 - a missing named query is shown, not fatal
            out[name] = f"unavailable: {str(exc).splitlines()[0][:120]}"
            continue
        out[name] = {"rows": len(df), "last": df.tail(3).to_dict(orient="records")}
    return out


def _print_summary(s: dict[str, Any], out: Path) -> None:
    echo = typer.echo
    echo("")
    echo("=" * 78)
    echo("fuelcard demo: summary")
    echo("=" * 78)
    sim = s["simulation"]
    echo(f"simulated     {sim['transactions']:,} transactions ({sim['fraud']:,} fraud), {sim['members']:,} members, "
         f"{sim['stations']} stations")
    echo(f"warehouse     {sum(v for v in s['warehouse_rows'].values() if isinstance(v, int)):,} rows loaded "
         f"into {len(s['warehouse_rows'])} tables")
    fb = s.get("fraud_backtest", {})
    if fb:
        rv = fb.get("review", {})
        echo(f"fraud model   backtest on {fb.get('rows', 0):,} test transactions ({fb.get('frauds')} fraud): "
             f"AUC {fb.get('auc_roc', 0):.3f}, AP {fb.get('average_precision', 0):.3f}, CP@100 "
             f"{fb.get('cp_at_100', 0):.3f}; at the review threshold FPR {rv.get('fpr', 0):.2%}, recall "
             f"{rv.get('recall', 0):.1%}, fraud amount caught {rv.get('amount_recall', 0):.1%}")
        per = fb.get("recall_by_scenario", {})
        echo("              recall by scenario: " + ", ".join(
            f"{k} {v.get('recall', 0):.0%} of {v.get('frauds')}" for k, v in sorted(per.items())))
    st = s.get("stream", {})
    if st:
        echo(f"stream        {st.get('decided', 0):,} authorisations decided by the Faust risk agent: "
             f"{st.get('decisions_by_outcome', {})}; latency p50/p99 ms {st.get('decision_latency_ms')}; "
             f"duplicates {st.get('duplicate_decisions')}, dead letters {st.get('dead_letters')}")
        echo(f"              fraud flagged {st.get('fraud_caught')}/{st.get('fraud_total')} by scenario "
             f"{st.get('fraud_caught_by_scenario', {})}; false-positive rate {st.get('false_positive_rate')}")
        echo(f"points        issued {st.get('points_issued'):,}, reversed {st.get('points_reversed'):,}, "
             f"redeemed {st.get('points_redeemed'):,}, expired {st.get('points_expired'):,}")
        echo(f"              new warehouse rows from the sink: {st.get('warehouse_rows_written', {})} (rows "
             "already loaded in step 2 are not inserted twice)")
    for kind, m in s.get("models", {}).items():
        echo(f"model {kind:8s}{m['version']}  {m['metrics']}")
    api = s.get("api", {})
    if api:
        from serving.demo import format_summary

        echo(format_summary(api))
    echo(f"reports       {s['reports']['fraud']} (fraud report + PNG), {s['reports']['models']}")
    echo(f"summary JSON  {out / 'summary.json'}")
    echo("timings (s)   " + ", ".join(f"{k.split(':')[0][:28]}={v}" for k, v in s["timings_s"].items()))


# ---------------------------------------------------------------------------------------------------- up


def _retimed_chunk(tx: Any, start: int, n: int, cycle: int) -> Any:
    """Rows ``start..start+n`` of the simulated purchases, moved to now (ids made unique per cycle)."""
    import pandas as pd

    chunk = tx.iloc[start:start + n].copy()
    if chunk.empty:
        return chunk
    now = pd.Timestamp.now(tz="UTC")
    # Keep each purchase's place in the simulated day, compressed into the next few seconds.
    span = (chunk["ts"].max() - chunk["ts"].min()) or pd.Timedelta(seconds=1)
    offset = (chunk["ts"] - chunk["ts"].min()) / span * pd.Timedelta(seconds=4)
    shift = now - chunk["ts"]
    chunk["ts"] = (now + offset).dt.floor("us")
    if "capture_ts" in chunk:
        chunk["capture_ts"] = (chunk["capture_ts"] + shift + offset).dt.floor("us")
    if cycle:
        chunk["tx_id"] = chunk["tx_id"].astype(str) + f"-r{cycle}"
    return chunk


class _SinkLoader:
    """Loads the sink agent's JSON-lines micro-batches into the warehouse this process owns (chdb allows one
    process per directory), reading only what was appended since the last pass; inserts are idempotent."""

    def __init__(self, wh: Any, sink_dir: Path) -> None:
        from streams.sinks import WAREHOUSE_KINDS, WarehouseSink

        self.sink = WarehouseSink(wh)
        self.kinds = WAREHOUSE_KINDS
        self.dir = sink_dir
        self.offsets: dict[Path, int] = {}
        self.rows = 0

    def poll(self) -> int:
        import orjson

        new: dict[str, list[dict[str, Any]]] = {k: [] for k in self.kinds}
        for path in sorted(self.dir.glob("*.jsonl")):
            kind = path.stem.split("@", 1)[0]
            with path.open("rb") as fh:
                fh.seek(self.offsets.get(path, 0))
                data = fh.read()
            end = data.rfind(b"\n") + 1  # only whole lines; a partial last line waits for the next pass
            self.offsets[path] = self.offsets.get(path, 0) + end
            if kind in new:
                new[kind].extend(orjson.loads(line) for line in data[:end].splitlines() if line.strip())
        n = 0
        for kind in self.kinds:  # authorisations first: later kinds look up their station and time
            if new[kind]:
                self.sink.write(kind, new[kind])
                n += len(new[kind])
        self.rows += n
        return n


@app.command("up")
def up(
    out: Path = typer.Option(Path("var/up"), help="Working directory (kept between runs)"),
    rate: float = typer.Option(25.0, help="Simulated authorisations per second fed to the stream"),
    port: int = typer.Option(8000, help="API and dashboard port on 127.0.0.1"),
    broker_port: int = typer.Option(19210, help="Embedded broker port on 127.0.0.1"),
    workers: int = typer.Option(1, help="Faust risk/points worker processes"),
    seed: int = typer.Option(7, help="Simulation seed for the first start"),
    max_seconds: float = typer.Option(0, help="Stop by itself after this many seconds (0 = until Ctrl-C)"),
) -> None:
    """Start the system on embedded defaults and keep it running: API + dashboard, agents, a steady feed."""
    import asyncio
    import threading

    import pandas as pd
    import uvicorn

    import warehouse
    from fuelcard.simulator import SimConfig, simulate, write
    from models.registry import Registry
    from serving.adapters import WarehouseSql
    from serving.app import create_app
    from serving.risk import create_router
    from streams.cluster import StreamCluster
    from streams.feed import day_events, to_records
    from streams.loadgen import make_producer, produce_at_rate

    out = out.resolve()
    sim_dir = out / "sim"
    settings = Settings(data_dir=out, warehouse_url=f"chdb://{out / 'warehouse'}", api_port=port,
                        kafka_bootstrap=f"kafka://127.0.0.1:{broker_port}")
    registry = Registry(settings.registry_dir)
    wh = warehouse.connect(settings.warehouse_url)
    steps = _Steps(total=4)
    if not (sim_dir / "transactions.parquet").exists():
        def _first_start() -> None:
            from warehouse.loader import load_dir

            frames = simulate(SimConfig(seed=seed, days=45, stations=40, members=4000), progress=True)
            write(frames, sim_dir)
            load_dir(wh, sim_dir, progress=True, settings=settings)

        steps.run("first start: simulate 45 days and load the warehouse", _first_start)
    else:
        steps.done += 1
    if not registry.kinds():
        steps.run("train every model into the registry",
                  lambda: _train_all(wh, settings.registry_dir, sim_dir, out / "reports", seed))
    else:
        steps.done += 1

    from fuelcard.simulator import read as read_sim

    frames = read_sim(sim_dir)
    tx = frames["transactions.parquet"].sort_values("ts").reset_index(drop=True)
    # The API asks the worker that owns a card for its decision directly (streams/direct.py): the decision and its
    # records are in Kafka before the answer, without the produce → consume → read-back round trip.
    direct_base = broker_port + 20
    cluster = StreamCluster(out / "stream", port=broker_port, workers=workers, agents="risk,points",
                            artifacts=settings.registry_dir, direct_port_base=direct_base,
                            watchdog_s=30.0)  # restart a worker whose partitions stop committing (FAULTS.md F8/F9)
    sink_dir = out / "stream" / "sink"
    stop = threading.Event()
    try:
        def _stream() -> None:
            cluster.start_broker()
            cluster.start_workers()
            cluster.start_workers(1, agents="sink", sink=f"jsonl:{sink_dir}", group_suffix="-sink")

        steps.run("start the embedded broker and the Faust agents", _stream)
        api = create_app(settings, sql=WarehouseSql(wh), registry=registry,
                         risk_router=create_router(settings, prefix=cluster.prefix,
                                                   direct_ports=tuple(direct_base + k for k in range(workers))))
        keys = api.state.services.demo_keys

        def _feed() -> None:
            async def main() -> None:
                producer = await make_producer(cluster.bootstrap)
                start, cycle = 0, 0
                try:
                    while not stop.is_set():
                        n = max(1, int(rate * 5))
                        chunk = _retimed_chunk(tx, start, n, cycle)
                        start += n
                        if start >= len(tx):
                            start, cycle = 0, cycle + 1
                        if not chunk.empty:
                            records = list(to_records(day_events(chunk), cluster.prefix or "fuelcard"))
                            await produce_at_rate(producer, records, rate=rate * len(records) / len(chunk))
                finally:
                    await producer.stop()

            asyncio.run(main())

        loader = _SinkLoader(wh, sink_dir)

        def _load() -> None:
            while not stop.wait(5.0):
                if sink_dir.exists():
                    try:
                        loader.poll()
                    except Exception as exc:  # noqa: BLE001 - keep serving; the next pass retries
                        typer.echo(f"sink loader: {str(exc).splitlines()[0][:200]}", err=True)

        threads = [threading.Thread(target=_feed, name="feed", daemon=True),
                   threading.Thread(target=_load, name="sink-loader", daemon=True)]
        for t in threads:
            t.start()
        base = f"http://{settings.api_host}:{port}"
        steps.run("serve the API and the dashboard", lambda: None)
        typer.echo("")
        typer.echo(f"dashboard     {base}/dashboard/#key={keys.get('analyst', '')}")
        typer.echo(f"API docs      {base}/docs")
        typer.echo("demo API keys " + ", ".join(f"{g}={k}" for g, k in sorted(keys.items())))
        example = ('{"tx_id":"curl-1","ts":"' + pd.Timestamp.now(tz="UTC").isoformat() + '","card_id":"'
                   + str(tx["card_id"].iloc[-1]) + '","station_id":"' + str(tx["station_id"].iloc[-1])
                   + '","product":"95","amount_fen":30000}')
        typer.echo(f"risk decision curl -s -X POST {base}/v1/risk/decide -H 'X-API-Key: "
                   f"{keys.get('transaction_path', '')}' -H 'Content-Type: application/json' -d '{example}'")
        typer.echo(f"feeding {rate:g} authorisations/s from the simulation; Ctrl-C to stop")
        config = uvicorn.Config(api, host=settings.api_host, port=port, log_level="warning")
        server = uvicorn.Server(config)
        if max_seconds > 0:
            threading.Timer(max_seconds, lambda: setattr(server, "should_exit", True)).start()
        server.run()
    finally:
        stop.set()
        cluster.stop()
        wh.close()
        typer.echo("stopped: broker and workers ended, warehouse closed")

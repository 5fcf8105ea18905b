"""Stream a simulated day through the real agents on the embedded broker and summarise what happened.

>>> # summary = run_demo_day(settings, Path("var/demo"), frames["transactions.parquet"],
>>> #                        cards=frames["cards.parquet"], members=frames["members.parquet"])
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from streams import topics as T
from streams.cluster import StreamCluster
from streams.feed import day_events, to_records
from streams.loadgen import DecisionCollector, make_producer, percentile, produce_at_rate, warm_up
from streams.sinks import read_jsonl_dir


def _directory_dir(data_dir: Path, cards: pd.DataFrame | None, members: pd.DataFrame | None) -> Path | None:
    if cards is None or members is None:
        return None
    d = data_dir / "directory"
    d.mkdir(parents=True, exist_ok=True)
    cards[["card_id", "member_id"]].to_parquet(d / "cards.parquet", index=False)
    cols = [c for c in ("member_id", "tier", "family_id") if c in members.columns]
    members[cols].to_parquet(d / "members.parquet", index=False)
    return d


async def _stream_day(cl: StreamCluster, records: list[Any], auth_ids: list[str], *, rate: float | None,
                      timeout_s: float, progress: Any = None) -> dict[str, Any]:
    decisions = DecisionCollector(cl.bootstrap, cl.topic(T.DECISIONS.suffix), from_beginning=True,
                                  keep_bodies=True)
    ledger = DecisionCollector(cl.bootstrap, cl.topic(T.POINTS_LEDGER.suffix), from_beginning=True,
                               keep_bodies=True, id_field="movement_id")
    dead = DecisionCollector(cl.bootstrap, cl.topic(T.DEAD_LETTERS.suffix), from_beginning=True,
                             keep_bodies=True, id_field="offset")
    for c in (decisions, ledger, dead):
        await c.start()
    try:
        warm_s = await warm_up(cl.bootstrap, cl.topic(T.AUTHORISATIONS.suffix), decisions, timeout=120)
        producer = await make_producer(cl.bootstrap)
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            n = await produce_at_rate(producer, records, rate=rate, sent_at=sent)
        finally:
            await producer.stop()
        produced_s = time.perf_counter() - t0
        ok = await decisions.wait_for(auth_ids, timeout_s)
        # Points: wait until the ledger stops growing (the points path has two hops).
        last, stable_since = -1, time.perf_counter()
        deadline = time.perf_counter() + min(60.0, timeout_s)
        while time.perf_counter() < deadline:
            cur = len(ledger.arrived)
            if cur != last:
                last, stable_since = cur, time.perf_counter()
            elif time.perf_counter() - stable_since > 3.0:
                break
            await asyncio.sleep(0.2)
        lat = [(decisions.arrived[t] - sent[t]) * 1000 for t in auth_ids if t in decisions.arrived and t in sent]
        return {"ok": ok, "produced": n, "produce_s": produced_s, "warm_up_s": warm_s, "latencies": lat,
                "decisions": {k: v for k, v in decisions.decisions.items() if not k.startswith("probe-")},
                "duplicates": decisions.duplicates, "ledger": ledger.decisions, "dead_letters": len(dead.arrived)}
    finally:
        for c in (decisions, ledger, dead):
            await c.stop()


def summarise(transactions: pd.DataFrame, decisions: dict[str, dict[str, Any]],
              ledger: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Decisions by outcome, fraud caught by scenario, false-positive rate, points issued."""
    by_outcome = Counter(d["outcome"] for d in decisions.values())
    tx = transactions.set_index("tx_id")
    flagged = {t for t, d in decisions.items() if d["outcome"] in ("review", "decline")}
    fraud_by: dict[str, dict[str, int]] = {}
    if "scenario" in tx.columns:
        for scen, ids in tx[tx.get("is_fraud", 0) == 1].groupby("scenario").groups.items():
            ids = [i for i in ids if i in decisions]
            fraud_by[str(scen) or "unlabelled"] = {"transactions": len(ids),
                                                   "caught": sum(1 for i in ids if i in flagged)}
    genuine = [i for i in tx.index[tx.get("is_fraud", 0) == 0] if i in decisions] if "is_fraud" in tx else []
    fp = sum(1 for i in genuine if i in flagged)
    kinds = Counter()
    pts = Counter()
    for m in ledger.values():
        kinds[m["kind"]] += 1
        pts[m["kind"]] += int(m["points"])
    return {
        "transactions": len(transactions),
        "decided": len(decisions),
        "decisions_by_outcome": dict(sorted(by_outcome.items())),
        "degraded_decisions": sum(1 for d in decisions.values() if d.get("degraded")),
        "fraud_caught_by_scenario": dict(sorted(fraud_by.items())),
        "fraud_caught": sum(v["caught"] for v in fraud_by.values()),
        "fraud_total": sum(v["transactions"] for v in fraud_by.values()),
        "false_positive_rate": round(fp / len(genuine), 5) if genuine else None,
        "points_issued": pts.get("accrual", 0),
        "points_reversed": -pts.get("reversal", 0),
        "points_redeemed": -pts.get("redemption", 0),
        "points_expired": -pts.get("expiry", 0),
        "redemptions_rejected": kinds.get("rejected", 0),
        "ledger_movements": dict(sorted(kinds.items())),
    }


def run_demo_day(settings: Any, data_dir: str | Path, transactions: pd.DataFrame, *,
                 cards: pd.DataFrame | None = None, members: pd.DataFrame | None = None,
                 recharges: pd.DataFrame | None = None, redemptions: pd.DataFrame | None = None,
                 warehouse: Any = None, workers: int = 1, port: int = 19250, rate: float | None = 3000.0,
                 timeout_s: float = 300.0) -> dict[str, Any]:
    """Start the broker, create topics, run the risk/points/sink agents (worker processes), stream the day,
    wait for every decision, stop everything by PID and return a summary.

    ``warehouse`` (an open :class:`warehouse.Warehouse`, optional): the sink agent writes micro-batches to
    JSONL files (chdb allows one process per data directory, and the caller holds it); they are loaded
    idempotently into the warehouse here after the run.
    """
    with demo_cluster(settings, data_dir, cards=cards, members=members, workers=workers, port=port) as cl:
        return stream_demo_day(cl, data_dir, transactions, recharges=recharges, redemptions=redemptions,
                               warehouse=warehouse, rate=rate, timeout_s=timeout_s)


@contextlib.contextmanager
def demo_cluster(settings: Any, data_dir: str | Path, *, cards: pd.DataFrame | None = None,
                 members: pd.DataFrame | None = None, workers: int = 1, port: int = 19250,
                 direct_port_base: int | None = None) -> Iterator[StreamCluster]:
    """The demo's stream, running while the ``with`` block runs: the broker (embedded unless the settings name
    one), every topic, ``workers`` risk/points workers (risk worker k answers direct decisions on
    ``direct_port_base + k`` when given) and one sink worker writing JSONL micro-batches to ``data_dir/sink``;
    all stopped by PID on exit."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    directory = _directory_dir(data_dir, cards, members)
    bootstrap_url = None if settings is None or getattr(settings, "embedded_broker", True) \
        else settings.kafka_bootstrap
    cl = StreamCluster(data_dir / "stream", port=port, workers=workers, agents="risk,points",
                       directory=directory, broker_url=bootstrap_url, direct_port_base=direct_port_base,
                       artifacts=_registry_root(settings), watchdog_s=30.0)
    try:
        cl.start_broker()
        cl.start_workers()
        # One sink worker (its own consumer group position; the warehouse is never on the payment path).
        cl.start_workers(1, agents="sink", sink=f"jsonl:{data_dir / 'sink'}", group_suffix="-sink")
        yield cl
    finally:
        cl.stop()


def stream_demo_day(cl: StreamCluster, data_dir: str | Path, transactions: pd.DataFrame, *,
                    recharges: pd.DataFrame | None = None, redemptions: pd.DataFrame | None = None,
                    warehouse: Any = None, rate: float | None = 3000.0, timeout_s: float = 300.0) -> dict[str, Any]:
    """Stream the day through the running :func:`demo_cluster` ``cl``, wait for every decision and for the sink,
    load the sink's rows into ``warehouse`` (if given) and return the summary; the stream keeps running."""
    data_dir = Path(data_dir)
    t_start = time.perf_counter()
    sink_dir = data_dir / "sink"
    events = day_events(transactions, recharges=recharges, redemptions=redemptions)
    auth_ids = [str(x) for x in transactions["tx_id"]]
    records = list(to_records(events, cl.prefix or "fuelcard"))
    res = asyncio.run(_stream_day(cl, records, auth_ids, rate=rate, timeout_s=timeout_s))
    # Give the sink one more micro-batch interval to write what it has, then until its files stop growing.
    _wait_sink(sink_dir, expected_decisions=len(res["decisions"]), timeout=30.0)
    _wait_quiet(sink_dir, quiet_s=2.0, timeout=30.0)
    cl.check_workers()
    summary = summarise(transactions, res["decisions"], res["ledger"])
    lat = res["latencies"]
    rows = read_jsonl_dir(sink_dir) if sink_dir.exists() else {}
    summary.update({
        "all_decided": res["ok"],
        "duplicate_decisions": res["duplicates"],
        "dead_letters": res["dead_letters"],
        "events_produced": res["produced"],
        "stream_seconds": round(res["produce_s"], 2),
        "decision_latency_ms": {"p50": round(percentile(lat, 50), 2), "p99": round(percentile(lat, 99), 2)},
        "sink_rows": {k: len(v) for k, v in sorted(rows.items())},
        "workers": cl.workers,
        "watchdog_restarts": sum(1 for e in cl.watchdog_events if "new_pid" in e),
        "wall_s": round(time.perf_counter() - t_start, 1),
    })
    if warehouse is not None:
        summary["warehouse_rows_written"] = load_sink_into_warehouse(warehouse, rows)
    return summary


def _wait_quiet(sink_dir: Path, *, quiet_s: float, timeout: float) -> None:
    """Wait until the sink's files have not grown for ``quiet_s`` (its last micro-batches are written)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = sum(p.stat().st_size for p in sink_dir.glob("*.jsonl")) if sink_dir.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.25)


def _wait_sink(sink_dir: Path, *, expected_decisions: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink_dir.exists():
            rows = read_jsonl_dir(sink_dir)
            got = sum(1 for k in rows.get("decisions", {}) if not str(k).startswith("probe-"))
            if got >= expected_decisions:
                time.sleep(1.5)  # the other kinds are in the same micro-batches or the next one
                return
        time.sleep(0.5)


def load_sink_into_warehouse(wh: Any, rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, int]:
    """Insert sink rows into the warehouse fact tables (idempotent there); returns rows written per table."""
    from streams.sinks import warehouse_frames

    written = {}
    for table, df in warehouse_frames(rows).items():
        written[table] = int(wh.insert_df(table, df)) if len(df) else 0
    return written


def _registry_root(settings: Any) -> Path | None:
    """Where the model registry lives (``settings.registry_dir``; older settings: ``artifacts_dir``)."""
    if settings is None:
        return None
    return Path(getattr(settings, "registry_dir", None) or settings.artifacts_dir)

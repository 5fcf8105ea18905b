"""Integration: the real embedded broker (noida-db) + the real Faust agents in worker processes.

These tests start the broker themselves on 127.0.0.1 (ports 19360-19369) and FAIL if it cannot start.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from fuelcard import points as pts
from fuelcard.simulator.config import SimConfig
from fuelcard.simulator.core import simulate
from streams.app import payment_to_points_request
from streams.demo import run_demo_day
from streams.directory import CardDirectory
from streams.feed import day_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim():
    f = simulate(SimConfig(days=1, stations=12, members=400, seed=11))
    return {k.removesuffix(".parquet"): v for k, v in f.items()}


def test_simulated_day_through_real_agents(sim, tmp_path: Path):
    from warehouse import connect

    wh = connect(f"chdb:///{tmp_path}/wh")
    wh.migrate()
    tx = sim["transactions"]
    s = run_demo_day(None, tmp_path / "run", tx, cards=sim["cards"], members=sim["members"],
                     recharges=sim["recharges"], redemptions=sim["redemptions"], warehouse=wh, port=19361,
                     timeout_s=120)
    # every authorisation decided exactly once
    assert s["all_decided"] and s["decided"] == len(tx) and s["duplicate_decisions"] == 0
    assert sum(s["decisions_by_outcome"].values()) == len(tx)
    assert s["dead_letters"] == 0
    assert s["fraud_total"] == int(tx["is_fraud"].sum())
    # points: every captured fuel/shop/wash purchase accrued, with the pure core's arithmetic
    directory = CardDirectory.from_frames(sim["cards"], sim["members"])
    expected: dict[str, int] = defaultdict(int)
    for _, suffix, ev in day_events(tx):
        if suffix == "payments" and ev.kind == "capture":
            req = payment_to_points_request(ev, directory)
            expected[req.account_id] += pts.apply(None, req)[0].balance
    assert s["points_issued"] == sum(expected.values()) > 0
    # the sink wrote every decision once; the warehouse holds them once even if loaded twice
    assert s["sink_rows"]["decisions"] >= len(tx)
    n_dec = wh.query_value("SELECT count() FROM fact_risk_decisions FINAL")
    assert n_dec == len(tx)
    from streams.demo import load_sink_into_warehouse
    from streams.sinks import read_jsonl_dir

    load_sink_into_warehouse(wh, read_jsonl_dir(tmp_path / "run" / "sink"))  # redelivery of everything
    assert wh.query_value("SELECT count() FROM fact_risk_decisions FINAL") == n_dec
    assert wh.query_value("SELECT count() FROM fact_risk_decisions") == n_dec
    earned = wh.query_value("SELECT sum(points) FROM fact_points_ledger WHERE kind = 'earn'")
    assert earned == s["points_issued"]
    assert wh.query_value("SELECT uniqExact(tx_id) FROM fact_transactions FINAL") == len(tx)


def test_review_queue_and_outcomes_are_consistent(sim, tmp_path: Path):
    # a burst on one card: velocity rules must send it to review/decline, review ones to the review queue
    base = sim["transactions"].iloc[:1].copy()
    burst = pd.concat([base.assign(tx_id=f"B{i}", ts=base["ts"] + pd.Timedelta(minutes=3 * i),
                                   status="captured", is_fraud=1, scenario="card_testing")
                       for i in range(8)], ignore_index=True)
    s = run_demo_day(None, tmp_path / "run", burst, port=19362, timeout_s=90)
    assert s["decided"] == 8
    assert s["decisions_by_outcome"].get("approve", 0) < 8
    assert s["fraud_caught"] >= 1
    assert asyncio.iscoroutinefunction(run_demo_day) is False

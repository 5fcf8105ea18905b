"""Unit tests of the speed layer's pure helpers: topic layout, feed, sinks, engine records, core bridge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from fuelcard.events import Authorisation
from streams import topics as T
from streams.broker import bootstrap_servers
from streams.engine import CardRecord, dump_record, load_engine, load_record
from streams.feed import day_events, to_records
from streams.loadgen import percentile, synthetic_authorisations
from streams.sinks import JsonlSink, MemorySink, read_jsonl_dir, row_id, warehouse_frames

T0 = pd.Timestamp("2026-03-01 02:00", tz="UTC")


def test_topic_layout_is_deliberate():
    specs = {n: (p, c) for n, p, c in T.all_topic_specs("fc", "app")}
    assert specs["fc.authorisations"][0] == specs["fc.decisions"][0] == T.HOT_PARTITIONS >= 4
    # co-partitioning: each table's changelog has the partitions of the topic it is keyed on
    assert specs["app-card_state-changelog"][0] == specs["fc.authorisations"][0]
    assert specs["app-points_accounts-changelog"][0] == specs["fc.points-requests"][0]
    assert specs["app-card_state-changelog"][1]["cleanup.policy"] == "compact"
    assert int(specs["fc.dead-letters"][1]["retention.ms"]) >= 30 * T.DAY_MS
    assert {s.suffix for s in T.ALL_TOPICS} >= {"authorisations", "payments", "recharges", "decisions", "review",
                                                 "points-ledger", "dead-letters"}


def test_bootstrap_servers():
    assert bootstrap_servers("kafka://a:1;b:2") == "a:1,b:2"
    assert bootstrap_servers("a:1") == "a:1"


def _frame():
    return pd.DataFrame([
        {"tx_id": "t1", "ts": T0, "capture_ts": T0 + pd.Timedelta(minutes=5), "card_id": "c1", "member_id": "m1",
         "station_id": "S1", "terminal_id": "S1-1", "device_id": None, "region": "r", "product": "95", "litres": 30.0,
             "amount_fen": 20_000, "lat": 30.0, "lon": 120.0, "status": "refunded", "is_fraud": 0, "scenario": ""},
        {"tx_id": "t2", "ts": T0 + pd.Timedelta(minutes=1), "capture_ts": pd.NaT, "card_id": "c2", "member_id": None,
         "station_id": "S2", "terminal_id": None, "device_id": "d", "region": None, "product": "shop", "litres": 0.0,
             "amount_fen": 500, "lat": float("nan"), "lon": float("nan"), "status": "timeout", "is_fraud": 1,
             "scenario": "card_testing"},
    ])


def test_feed_orders_events_and_derives_payments():
    rech = pd.DataFrame([{"recharge_id": "R9", "ts": T0 - pd.Timedelta(hours=1), "card_id": "c1", "amount_fen": 1,
                              "batch_id": None}])
    red = pd.DataFrame([{"redemption_id": "P1", "ts": T0 + pd.Timedelta(hours=3), "member_id": "m1", "points": 5,
                             "item": "mug"}])
    ev = day_events(_frame(), recharges=rech, redemptions=red)
    kinds = [(s, e.kind) for _, s, e in ev]
    assert kinds == [("recharges", "recharge"), ("authorisations", "authorisation"),
                     ("authorisations", "authorisation"), ("payments", "cancel"), ("payments", "capture"),
                     ("payments", "refund"), ("redemptions", "redemption")]
    t2 = ev[2][2]
    assert t2.lat is None and t2.litres is None and ev[3][2].reason == "timeout"
    recs = list(to_records(ev, "p"))
    assert recs[1].topic == "p.authorisations" and recs[1].key == b"c1" and recs[1].tx_id == "t1"
    assert recs[-1].key == b"m1" and recs[-1].tx_id is None


def test_sinks_are_idempotent_by_row_id(tmp_path):
    rows = [{"tx_id": "t1", "kind": "capture"}, {"tx_id": "t1", "kind": "capture"}]
    m = MemorySink()
    m.write("payments", rows)
    m.write("payments", rows)
    assert len(m.rows["payments"]) == 1
    j = JsonlSink(tmp_path, tag="w1")
    j.write("points-ledger", [{"movement_id": "a"}, {"movement_id": "a"}, {"movement_id": "b"}])
    JsonlSink(tmp_path, tag="w2").write("points-ledger", [{"movement_id": "b"}])
    back = read_jsonl_dir(tmp_path)
    assert set(back) == {"points-ledger"} and len(back["points-ledger"]) == 2
    assert row_id("payments", {"kind": "refund", "refund_id": "r1", "tx_id": "t"}) == "refund:r1"


def test_warehouse_frames_map_stream_rows_to_fact_tables():
    ev = day_events(_frame())
    by_kind: dict[str, dict] = {}
    for _, suffix, e in ev:
        d = e.model_dump(mode="json")
        by_kind.setdefault(suffix, {})[row_id(suffix, d)] = d
    eng = load_engine()
    dec = eng.decide(None, ev[0][2])[1].model_dump(mode="json")
    by_kind["decisions"] = {dec["tx_id"]: dec}
    by_kind["points-ledger"] = {"accrual:t1": {"movement_id": "accrual:t1", "ts": T0.isoformat(), "kind": "accrual",
                                               "points": 200, "member_id": "m1", "tx_id": "t1",
                                               "account_id": "member:m1", "reason": ""},
                                "rejected:x": {"movement_id": "rejected:x", "ts": T0.isoformat(),
                                               "kind": "rejected", "points": 0}}
    frames = warehouse_frames(by_kind)
    tx = frames["fact_transactions"]
    assert sorted(tx["status"]) == ["authorised", "authorised", "captured", "refunded", "timeout"]
    refund = tx[tx["status"] == "refunded"].iloc[0]
    assert refund["station_id"] == "S1" and refund["ts"] == T0 and refund["version"] == 3
    assert frames["fact_risk_decisions"].iloc[0]["station_id"] == "S1"
    ledger = frames["fact_points_ledger"]
    assert list(ledger["kind"]) == ["earn"] and list(ledger["points"]) == [200]


def test_card_record_roundtrip_and_bounded_memory():
    rec = CardRecord(None)
    for i in range(100):
        rec = rec.advance({"n": i}, f"t{i}")
    assert len(rec.recent) == 64 and rec.seen("t99") and not rec.seen("t0")
    assert load_record(dump_record(rec)) == rec
    assert load_record(None) is None


def test_engine_is_the_core_flags_impossible_travel_and_degraded_is_stateless():
    eng = load_engine()  # no registry: the real core, rules-only
    assert type(eng).__name__ == "CoreRiskEngine" and eng.model_version == "rules-only"
    t = datetime(2026, 3, 1, 4, tzinfo=UTC)
    a1 = Authorisation(tx_id="a", ts=t, card_id="c", station_id="S1", product="95", amount_fen=100, lat=30, lon=120)
    a2 = a1.model_copy(update={"tx_id": "b", "ts": t + timedelta(minutes=10), "station_id": "S2",
                               "lat": 39.9, "lon": 116.4})
    st, d1 = eng.decide(None, a1)
    rec = load_record(dump_record(CardRecord(None).advance(st, "a"), eng), eng)  # through the changelog form
    _, d2 = eng.decide(rec.state, a2)
    assert d1.outcome == "approve" and d2.outcome == "decline" and "IMPOSSIBLE_TRAVEL" in d2.reasons
    assert eng.decide_degraded(a2).outcome == "approve" and eng.decide_degraded(a2).degraded


def test_load_engine_fails_loudly(monkeypatch, tmp_path):
    from streams import core_bridge

    with pytest.raises(RuntimeError, match="no promoted fraud model"):
        load_engine(artifacts_dir=tmp_path, require_model=True)

    def broken(*a, **kw):
        raise ImportError("scoring core half-finished")

    monkeypatch.setattr(core_bridge, "CoreRiskEngine", broken)
    with pytest.raises(RuntimeError, match="cannot be loaded.*half-finished"):
        load_engine(artifacts_dir=tmp_path)


def test_percentile():
    assert percentile([], 99) == 0.0
    assert percentile(list(range(101)), 50) == 50 and percentile(list(range(101)), 99) == 99


def test_core_bridge_matches_in_process_scorer():
    """Stream path (card state passed in and out, as the table does) == the core's own in-process Scorer."""
    scoring = pytest.importorskip("fuelcard.scoring")
    from fuelcard.features import tx_from_event
    from fuelcard.rules import load_rules
    from streams.core_bridge import CoreRiskEngine

    bridge = CoreRiskEngine(artifacts_dir=None)
    ref = scoring.Scorer(load_rules())
    table: dict[str, object] = {}
    for a in synthetic_authorisations(400, cards=30, seed=3):
        st, d = bridge.decide(load_record(table.get(a.card_id), bridge).state if a.card_id in table else None, a)
        table[a.card_id] = dump_record(CardRecord(st), bridge)  # through the changelog's serialisation
        r = ref.decide(tx_from_event(a))
        assert (d.outcome, d.reasons, d.score) == (r.outcome, r.reasons, r.score), a.tx_id


def test_fast_benchmark_records_are_the_synthetic_authorisations():
    from streams.loadgen import auth_records, auth_records_fast

    fast = list(auth_records_fast("t", 300, cards=50, seed=2))
    ref = list(auth_records("t", synthetic_authorisations(300, cards=50, seed=2)))
    assert [(r.key, r.tx_id) for r in fast] == [(r.key, r.tx_id) for r in ref]
    assert [Authorisation.model_validate_json(r.value) for r in fast] == \
        [Authorisation.model_validate_json(r.value) for r in ref]
    # cards keep to their neighbourhood: a station is always at one place, a card's stations are close together
    by_card: dict[str, set[tuple[float, float]]] = {}
    for r in ref:
        a = Authorisation.model_validate_json(r.value)
        by_card.setdefault(a.card_id, set()).add((a.lat, a.lon))
    assert all(max(abs(p[0] - q[0]) + abs(p[1] - q[1]) for p in ps for q in ps) <= 0.4 for ps in by_card.values())


def test_benchmark_retention_bounds_every_topic_changelogs_included():
    specs = T.all_topic_specs("p", "app")
    short = T.with_retention(specs, 60_000)
    assert [(n, p) for n, p, _ in short] == [(n, p) for n, p, _ in specs]
    by_name = {n: c for n, _, c in short}
    assert all(c["retention.ms"] == "60000" and c["segment.ms"] == "10000" for c in by_name.values())
    assert by_name["app-card_state-changelog"]["cleanup.policy"] == "compact,delete"
    assert "cleanup.policy" not in by_name["p.authorisations"]
    assert {n: c for n, _, c in specs}["app-card_state-changelog"] == {"cleanup.policy": "compact"}  # unchanged

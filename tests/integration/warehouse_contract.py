"""The warehouse contract: the same checks run on embedded chdb (tests/test_warehouse.py) and on a real
ClickHouse server 18.16 through clickhouse-driver (tests/integration/test_clickhouse_server.py).

Each function takes a freshly migrated, empty warehouse and the directory of a small real simulation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fuelcard.privacy import sm4_decrypt
from fuelcard.settings import Settings
from warehouse import Warehouse
from warehouse.loader import load_dir
from warehouse.queries import QUERIES
from warehouse.sink import MicroBatchSink, decision_row, transaction_row

SETTINGS = Settings()
SM4 = SETTINGS.sm4_key.get_secret_value()

FACTS = ["fact_transactions", "fact_recharges", "fact_risk_decisions", "fact_points_ledger", "fact_tank_readings",
         "fact_prices", "fact_competitor_prices", "fact_crude_prices"]
DIMS = ["dim_date", "dim_station", "dim_product", "dim_card", "dim_member", "dim_vehicle", "dim_fleet"]
ROLLUPS = ["rollup_sales_hourly", "rollup_sales_daily", "rollup_risk_daily", "rollup_points_daily",
           "rollup_member_activity_daily", "rollup_network_hourly"]

PARAMS = {"sales_hourly_station": {"station_id": "S0001"}, "fleet_vehicle_costs": {"fleet_id": "FL0001"},
          "member_profile": {"member_id": "M0000001"}}


def expected_sales(sim: Path) -> dict[str, int | float]:
    """What the sales rollups must say, computed with pandas from the simulator file."""
    tx = pd.read_parquet(sim / "transactions.parquet")
    sold = tx[tx.status.isin(["captured", "refunded"])]
    return {
        "transactions": len(tx),
        "captured": len(sold),
        "gross_fen": int(sold.amount_fen.sum()),
        "refund_fen": int(tx[tx.status == "refunded"].amount_fen.sum()),
        "litres": float(sold.litres.sum()),
        "fraud": int(tx.is_fraud.sum()),
    }


def rollup_totals(wh: Warehouse) -> dict[str, int | float]:
    df = wh.query_df(
        "SELECT sum(transactions) AS transactions, sum(captured) AS captured, sum(captured_fen) AS gross_fen, "
        "sum(refunded_fen) AS refund_fen, sum(litres_sum) AS litres, sum(fraud) AS fraud FROM rollup_sales_daily"
    )
    row = df.iloc[0]
    # litres is a float sum: background merges may change the summation order, so compare it rounded
    return {k: (round(float(row[k]), 3) if k == "litres" else int(row[k])) for k in df.columns}


def hourly_totals(wh: Warehouse) -> tuple[int, int]:
    df = wh.query_df("SELECT sum(captured) AS c, sum(captured_fen) AS f FROM rollup_sales_hourly")
    net = wh.query_df("SELECT sum(captured) AS c, sum(captured_fen) AS f FROM rollup_network_hourly")
    assert (int(net.c.iloc[0]), int(net.f.iloc[0])) == (int(df.c.iloc[0]), int(df.f.iloc[0]))
    return int(df.c.iloc[0]), int(df.f.iloc[0])


def check_schema(wh: Warehouse) -> None:
    """Migrations are versioned and idempotent; every fact/dimension/rollup of the issue exists with a
    deduplicating engine."""
    assert wh.migrate() == []
    applied = wh.applied_migrations()
    assert list(applied.version) == sorted(applied.version) and len(applied) >= 4
    engines = wh.query_df("SELECT name, engine FROM system.tables WHERE database = {db:String}",
                          {"db": wh.database}).set_index("name")["engine"].to_dict()
    for t in FACTS + DIMS:
        assert engines.get(t) == "ReplacingMergeTree", (t, engines.get(t))
    for t in ROLLUPS:
        assert engines.get(t) in ("SummingMergeTree", "AggregatingMergeTree"), (t, engines.get(t))
    assert {f"mv_{t.removeprefix('rollup_')}" for t in ROLLUPS} <= {n for n, e in engines.items()
                                                                   if e == "MaterializedView"}
    products = wh.query_df("SELECT product FROM dim_product FINAL ORDER BY product")
    assert list(products["product"]) == ["92", "95", "98", "diesel", "shop", "wash"]


def check_load_and_rollups(wh: Warehouse, sim: Path) -> dict[str, int]:
    """Bulk load: base facts hold every purchase once; the rollups equal a pandas recomputation."""
    counts = load_dir(wh, sim, progress=False, settings=SETTINGS)
    tx = pd.read_parquet(sim / "transactions.parquet")
    n_refunded = int((tx.status == "refunded").sum())
    assert counts["fact_transactions"] == len(tx) + n_refunded  # refunded = captured row + refund row
    assert wh.query_value("SELECT count() FROM fact_transactions FINAL") == len(tx)
    got, want = rollup_totals(wh), expected_sales(sim)
    for k in want:
        if k == "litres":
            assert abs(got[k] - want[k]) < 1e-6 * max(1.0, want[k]), (k, got[k], want[k])
        else:
            assert got[k] == want[k], (k, got[k], want[k])
    assert hourly_totals(wh) == (want["captured"], want["gross_fen"])
    # money stays exact integer fen end to end
    assert int(wh.query_value("SELECT sum(amount_fen) FROM fact_transactions FINAL")) == int(tx.amount_fen.sum())
    for table, file in (("dim_station", "stations"), ("dim_card", "cards"), ("fact_tank_readings", "tank_readings"),
                        ("fact_prices", "prices"), ("fact_crude_prices", "crude")):
        assert wh.query_value(f"SELECT count() FROM {table} FINAL") == len(pd.read_parquet(sim / f"{file}.parquet"))
    return counts


def check_reload_is_idempotent(wh: Warehouse, sim: Path) -> None:
    """Loading the same files again (a replay) changes no count and no rollup figure."""
    before = rollup_totals(wh), hourly_totals(wh)
    members = wh.query_value("SELECT uniqHLL12Merge(members) FROM rollup_member_activity_daily")
    counts = load_dir(wh, sim, progress=False, settings=SETTINGS)
    assert counts["fact_transactions"] == 0
    assert counts.get("fact_points_ledger", 0) == 0
    assert (rollup_totals(wh), hourly_totals(wh)) == before
    assert wh.query_value("SELECT uniqHLL12Merge(members) FROM rollup_member_activity_daily") == members
    tx = pd.read_parquet(sim / "transactions.parquet")
    assert wh.query_value("SELECT count() FROM fact_transactions FINAL") == len(tx)
    # dimensions were stored twice physically; FINAL collapses them
    assert wh.query_value("SELECT count() FROM dim_station FINAL") == len(pd.read_parquet(sim / "stations.parquet"))


def check_sink_redelivery_and_lifecycle(wh: Warehouse, sim: Path) -> None:
    """Stream path: decisions delivered twice count once; authorisation -> capture -> refund ends refunded,
    with the sale and the refund each counted once in the rollups."""
    from datetime import UTC, datetime

    from fuelcard.events import Authorisation, Capture, Decision, Outcome, Product, Refund

    tx = pd.read_parquet(sim / "transactions.parquet").head(300)
    decisions = [
        Decision(tx_id=r.tx_id, card_id=r.card_id, ts=r.ts.to_pydatetime(),
                 outcome=Outcome.REVIEW if r.is_fraud else Outcome.APPROVE, score=0.9 if r.is_fraud else 0.1,
                 reasons=("velocity",) if r.is_fraud else (), model_version="m1", ruleset_version="r1",
                 latency_ms=2.0)
        for r in tx.itertuples()
    ]
    sink = MicroBatchSink(wh, "fact_risk_decisions", transform=decision_row, max_rows=1000, max_delay_s=0.2)
    sink.add_many(decisions)
    sink.add_many(decisions[:120])  # redelivered after a consumer restart
    stats = sink.close()
    assert stats.rows_in == 420 and stats.buffered == 0 and stats.errors == 0
    sink2 = MicroBatchSink(wh, "fact_risk_decisions", transform=decision_row)
    sink2.add_many(decisions[:50])  # and once more, in a later batch
    sink2.close()
    kpis = wh.named_query("risk_kpis_daily")
    assert int(kpis.decided.sum()) == 300
    assert int(kpis.reviewed.sum()) == int(tx.is_fraud.sum())
    assert wh.query_value("SELECT count() FROM fact_risk_decisions FINAL") == 300
    fp = wh.named_query("risk_false_positives")
    assert int(fp.decisions.sum()) == 300 and int(fp.false_positives.sum()) == 0
    assert int(fp.true_positives.sum()) == int(tx.is_fraud.sum())

    before = rollup_totals(wh)
    t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    auth = Authorisation(tx_id="TX-LIFE-1", ts=t0, card_id="CARDTOKEN1", station_id="S0001",
                         product=Product.GASOLINE_95, amount_fen=30000)
    cap = Capture(tx_id="TX-LIFE-1", ts=t0.replace(minute=4), card_id="CARDTOKEN1", station_id="S0001",
                  product=Product.GASOLINE_95, amount_fen=25_012, litres=31.4, member_id="M0000001")
    ref = Refund(tx_id="TX-LIFE-1", refund_id="RF1", ts=t0.replace(hour=5), card_id="CARDTOKEN1", amount_fen=25_012)
    rows = [transaction_row(auth), transaction_row(cap, authorised_at=t0),
            transaction_row(ref, authorised_at=t0, station_id="S0001", product="95")]
    with MicroBatchSink(wh, "fact_transactions") as s:
        s.add_many(rows)
    with MicroBatchSink(wh, "fact_transactions") as s:  # the whole lifecycle redelivered
        s.add_many(rows)
    final = wh.query_df("SELECT status, amount_fen FROM fact_transactions FINAL WHERE tx_id = {t:String}",
                        {"t": "TX-LIFE-1"})
    assert list(final.status) == ["refunded"]
    after = rollup_totals(wh)
    assert after["transactions"] == before["transactions"] + 1
    assert after["captured"] == before["captured"] + 1
    assert after["gross_fen"] == before["gross_fen"] + 25_012
    assert after["refund_fen"] == before["refund_fen"] + 25_012


def check_named_queries(wh: Warehouse) -> dict[str, int]:
    """Every portable named query runs; returns rows per query."""
    out = {}
    for q in QUERIES.values():
        if q.modern_only:
            continue
        df = wh.named_query(q.name, **PARAMS.get(q.name, {}))
        assert isinstance(df, pd.DataFrame)
        out[q.name] = len(df)
    assert out["sales_daily"] > 0 and out["top_stations"] > 0 and out["member_activity_daily"] > 0
    assert out["price_gap"] > 0 and out["sales_by_region"] > 0
    return out


def check_injection_is_inert(wh: Warehouse) -> None:
    """A hostile parameter is a value, never SQL."""
    evil = "M0000001' OR 1=1 --"
    assert wh.named_query("member_profile", member_id=evil).empty
    assert wh.named_query("sales_hourly_station", station_id="x'); DROP TABLE fact_transactions; --").empty
    assert wh.table_exists("fact_transactions")


def check_pii(wh: Warehouse, sim: Path) -> None:
    """Members' ID number and phone are stored only SM4-encrypted; display paths return masks."""
    members = pd.read_parquet(sim / "members.parquet").set_index("member_id")
    cols = {c.name for c in wh.columns("dim_member")}
    assert "id_number" not in cols and "phone" not in cols
    stored = wh.query_df("SELECT member_id, id_number_enc, phone_enc, phone_masked FROM dim_member FINAL "
                         "ORDER BY member_id LIMIT 20")
    for r in stored.itertuples():
        raw = members.loc[r.member_id]
        assert raw.phone not in r.phone_enc
        assert sm4_decrypt(r.id_number_enc, key_hex=SM4) == raw.id_number
        assert sm4_decrypt(r.phone_enc, key_hex=SM4) == raw.phone
        assert r.phone_masked == raw.phone[:3] + "****" + raw.phone[-4:]
    some = stored.member_id.iloc[0]
    prof = wh.named_query("member_profile", member_id=some)
    assert prof.phone.iloc[0].count("*") == 4 and prof.id_number.iloc[0] != members.loc[some].id_number
    raw_phone = members.phone.iloc[0]
    hits = wh.query_value(
        "SELECT count() FROM dim_member WHERE position(id_number_enc, {p:String}) > 0 "
        "OR position(phone_enc, {p:String}) > 0 OR position(phone_masked, {p:String}) > 0", {"p": raw_phone})
    assert hits == 0
    # card ids are tokens, never whole card numbers
    assert wh.query_value("SELECT count() FROM dim_card WHERE match(card_id, '^[0-9]{13,19}$')") == 0


def private_tmp(prefix: str):
    """A temp dir of our own (not pytest's rotating basetemp, which concurrent pytest runs of other
    contributors on the same machine may delete); removed afterwards. Use as a generator fixture body."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=f"fuelcard-{prefix}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_simulation(out: Path) -> Path:
    """A small real simulation (the project's simulator), about 2k purchases over two weeks."""
    from fuelcard.simulator import SimConfig, simulate, write

    frames = simulate(SimConfig(seed=11, days=14, stations=10, members=500), progress=False)
    write(frames, out)
    return out


def check_backfill_migration(wh: Warehouse, sim: Path, tmp: Path) -> None:
    """A rollup added by a later migration (0004) is backfilled from what is already stored, exactly once."""
    import shutil

    from warehouse.engine import MIGRATIONS_DIR

    early = tmp / "early"
    early.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql"))[:3]:
        shutil.copy(f, early / f.name)
    assert len(wh.migrate(early)) == 3
    load_dir(wh, sim, progress=False, settings=SETTINGS, migrate=False)
    assert wh.migrate() == ["0004_network_hourly.sql"]
    hourly_totals(wh)  # asserts network rollup == per-station rollup
    load_dir(wh, sim, progress=False, settings=SETTINGS)  # a replay after the migration adds nothing
    c, f = hourly_totals(wh)
    want = expected_sales(sim)
    assert (c, f) == (want["captured"], want["gross_fen"])

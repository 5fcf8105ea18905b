"""The ClickHouse cluster DDL is generated from the warehouse migrations, is up to date, and runs.

* text checks: every non-dimension table becomes ``<name>_local`` (Replicated engine with {shard}/{replica}
  macros) + a Distributed table under the original name; dimensions are replicated everywhere; MVs read and
  write the local tables;
* execution: the chdb-executable variant (plain engines, Merge instead of Distributed) runs in chdb, and an
  insert into a local fact reaches the rollups through the MVs and reads back through the "distributed" names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from infra import warehouse_cluster as wc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def statements() -> list[str]:
    return wc.migration_statements()


@pytest.fixture(scope="module")
def cluster(statements: list[str]) -> list[str]:
    return wc.cluster_statements(statements)


def test_generated_schema_file_is_up_to_date() -> None:
    assert wc.OUT.read_text() == wc.render(), "run: .venv/bin/python infra/warehouse_cluster.py"


def test_every_table_has_a_cluster_variant(statements: list[str], cluster: list[str]) -> None:
    tables = [t for t in (wc.parse_table(s) for s in statements) if t is not None]
    assert len(tables) >= 20
    text = "\n".join(cluster)
    for t in tables:
        if t.is_dimension:
            assert re.search(rf"CREATE TABLE IF NOT EXISTS {t.name} ON CLUSTER '{{cluster}}' \(", text)
            assert f"'/clickhouse/tables/all/{{database}}/{t.name}', '{{replica}}'" in text
        else:
            local = f"{t.name}_local"
            assert f"CREATE TABLE IF NOT EXISTS {local} ON CLUSTER" in text
            assert f"'/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}'" in text
            assert re.search(rf"CREATE TABLE IF NOT EXISTS {t.name} ON CLUSTER '{{cluster}}' AS {local}\n"
                             rf"ENGINE = Distributed\('{{cluster}}', currentDatabase\(\), {local}, cityHash64", text)
        assert f"Replicated{t.engine}(" in text


def test_engine_arguments_survive_and_facts_shard_by_card(cluster: list[str]) -> None:
    text = "\n".join(cluster)
    # ReplacingMergeTree(version) keeps its version column after the replication arguments
    assert ("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/fact_transactions_local', "
            "'{replica}', version)") in text
    assert "fact_transactions_local, cityHash64(card_id))" in text
    # no replicated table without ON CLUSTER, no plain MergeTree family engine left
    for stmt in cluster:
        if stmt.startswith("CREATE"):
            assert "ON CLUSTER '{cluster}'" in stmt
        assert not re.search(r"ENGINE = (Replacing|Summing|Aggregating)?MergeTree\(", stmt)


def test_materialized_views_read_and_write_local_tables(cluster: list[str]) -> None:
    mvs = [s for s in cluster if s.startswith("CREATE MATERIALIZED VIEW")]
    assert mvs
    for mv in mvs:
        target = re.search(r" TO (\w+) AS", mv).group(1)
        assert target.endswith("_local")
        sources = re.findall(r"FROM (\w+)", mv)
        assert sources and all(s.endswith("_local") for s in sources), mv[:200]


def test_cluster_ddl_runs_on_chdb_with_local_stand_ins(tmp_path: Path, cluster: list[str]) -> None:
    from warehouse import connect

    runnable = wc.executable_variant(cluster)
    assert not any("ON CLUSTER" in s or "Replicated" in s or "Distributed(" in s for s in runnable)
    with connect(f"chdb://{tmp_path / 'wh'}", follow_owner=False) as wh:
        for stmt in runnable:
            wh.execute(stmt)
        names = set(wh.query_df("SELECT name FROM system.tables WHERE database = currentDatabase()")["name"])
        assert {"fact_transactions", "fact_transactions_local", "rollup_sales_daily_local", "dim_card"} <= names
        assert wh.query_value("SELECT count() FROM dim_product") == 6  # the seed ran against the dimension
        wh.execute(
            "INSERT INTO fact_transactions_local (tx_id, version, status, ts, card_id, member_id, station_id, "
            "region, product, litres, amount_fen, is_fraud) "
            "SELECT concat('t', toString(number)), 2, 'captured', toDateTime('2026-01-05 08:00:00', 'UTC') "
            "+ number * 60, concat('c', toString(number % 3)), 'm1', 'S0001', 'east', '95', 30.0, 25000, 0 "
            "FROM numbers(10)"
        )
        through_distributed = wh.query_df("SELECT count() AS n, sum(amount_fen) AS s FROM fact_transactions")
        assert int(through_distributed["n"][0]) == 10 and int(through_distributed["s"][0]) == 250000
        daily = wh.query_df("SELECT * FROM rollup_sales_daily")
        assert not daily.empty, "the MV on the local fact must feed the local rollup"
        assert isinstance(daily, pd.DataFrame)

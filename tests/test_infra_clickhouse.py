"""The ClickHouse cluster DDL is generated from the warehouse migrations, is up to date, and runs.

* text checks: every non-dimension table becomes ``<name>_local`` (Replicated engine with {shard}/{replica}
  macros) + a Distributed table under the original name; dimensions are replicated everywhere; MVs read and
  write the local tables;
* execution: the chdb-executable variant (plain engines, Merge instead of Distributed) runs in chdb, and an
  insert into a local fact reaches the rollups through the MVs and reads back through the "distributed" names.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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


_RUN_ON_CHDB = r"""
import json, sys
from warehouse import connect
statements = json.load(open(sys.argv[1]))
with connect("chdb://" + sys.argv[2], follow_owner=False) as wh:
    for stmt in statements:
        wh.execute(stmt)
    names = sorted(wh.query_df("SELECT name FROM system.tables WHERE database = currentDatabase()")["name"])
    products = int(wh.query_value("SELECT count() FROM dim_product"))
    wh.execute(
        "INSERT INTO fact_transactions_local (tx_id, version, status, ts, card_id, member_id, station_id, "
        "region, product, litres, amount_fen, is_fraud) "
        "SELECT concat('t', toString(number)), 2, 'captured', toDateTime('2026-01-05 08:00:00', 'UTC') "
        "+ number * 60, concat('c', toString(number % 3)), 'm1', 'S0001', 'east', '95', 30.0, 25000, 0 "
        "FROM numbers(10)"
    )
    n, s = wh.query_df("SELECT count() AS n, sum(amount_fen) AS s FROM fact_transactions").iloc[0]
    daily = len(wh.query_df("SELECT * FROM rollup_sales_daily"))
print(json.dumps({"names": names, "products": products, "n": int(n), "s": int(s), "daily": daily}))
"""


def test_cluster_ddl_runs_on_chdb_with_local_stand_ins(tmp_path: Path, cluster: list[str]) -> None:
    # In a child process: chdb allows one data directory per process, and other tests may hold theirs.
    runnable = wc.executable_variant(cluster)
    assert not any("ON CLUSTER" in s or "Replicated" in s or "Distributed(" in s for s in runnable)
    (tmp_path / "ddl.json").write_text(json.dumps(runnable))
    proc = subprocess.run([sys.executable, "-c", _RUN_ON_CHDB, str(tmp_path / "ddl.json"), str(tmp_path / "wh")],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"fact_transactions", "fact_transactions_local", "rollup_sales_daily_local", "dim_card"} <= set(out["names"])
    assert out["products"] == 6  # the seed ran against the replicated dimension
    assert (out["n"], out["s"]) == (10, 250000)  # inserted into the local table, read through the "distributed" one
    assert out["daily"] > 0, "the MV on the local fact must feed the local rollup"

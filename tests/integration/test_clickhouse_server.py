"""The warehouse contract against a real ClickHouse server (Debian 18.16) through clickhouse-driver.

Same schema, load, dedup, rollup, PII and parameter checks as on chdb (tests/test_warehouse.py). Where the
2018 dialect lacks a feature, the test says so: modern-only queries are strict xfails that must raise
UnsupportedOnEngine, and the raw SQL is shown to fail on the server too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import warehouse_contract as contract
from warehouse import UnsupportedOnEngine, Warehouse, WarehouseError, connect
from warehouse.queries import QUERIES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim() -> Path:
    for d in contract.private_tmp("sim"):
        yield contract.make_simulation(d)


@pytest.fixture
def own_tmp() -> Path:
    yield from contract.private_tmp("t")


@pytest.fixture(scope="module")
def wh(clickhouse_server) -> Warehouse:
    """One migrated database for the ordered checks of this module (schema -> load -> reload -> stream)."""
    w = connect(clickhouse_server.url("contract"))
    assert w.engine == "clickhouse" and w.migrate()
    yield w
    w.close()


def test_server_is_the_2018_release(wh: Warehouse) -> None:
    assert wh.version().startswith("18.16"), wh.version()
    assert wh.modern is False


def test_schema(wh: Warehouse) -> None:
    contract.check_schema(wh)


def test_load_and_rollups(wh: Warehouse, sim: Path) -> None:
    contract.check_load_and_rollups(wh, sim)


def test_reload_is_idempotent(wh: Warehouse, sim: Path) -> None:
    contract.check_reload_is_idempotent(wh, sim)


def test_sink_redelivery_and_lifecycle(wh: Warehouse, sim: Path) -> None:
    contract.check_sink_redelivery_and_lifecycle(wh, sim)


def test_named_queries(wh: Warehouse) -> None:
    contract.check_named_queries(wh)


def test_injection_is_inert(wh: Warehouse) -> None:
    contract.check_injection_is_inert(wh)


def test_pii(wh: Warehouse, sim: Path) -> None:
    contract.check_pii(wh, sim)


MODERN = sorted(n for n, q in QUERIES.items() if q.modern_only)


@pytest.mark.xfail(strict=True, raises=UnsupportedOnEngine,
                   reason="ClickHouse 18.16 has no window functions and no CTEs (modern-only queries)")
@pytest.mark.parametrize("name", MODERN)
def test_modern_only_queries_are_refused_on_18_16(wh: Warehouse, name: str) -> None:
    wh.named_query(name)


@pytest.mark.parametrize("name", MODERN)
def test_modern_only_sql_really_fails_on_18_16(wh: Warehouse, name: str) -> None:
    """Not just our flag: the server itself rejects the SQL (so the flag is needed)."""
    q = QUERIES[name]
    with pytest.raises(WarehouseError):
        wh.query_df(q.sql, q.params_with_defaults({}))


def test_migrate_on_a_second_database_and_twice(clickhouse_server) -> None:
    with connect(clickhouse_server.url("second")) as w:
        assert len(w.migrate()) >= 3
        assert w.migrate() == []
    with connect(clickhouse_server.url("second")) as w:  # a new connection sees the applied state
        assert w.migrate() == []


def test_cli_against_the_server(clickhouse_server, sim: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`fuelcard warehouse migrate/load/query/status` with FUELCARD_WAREHOUSE_URL pointing at the server."""
    from fuelcard.cli import app

    monkeypatch.setenv("FUELCARD_WAREHOUSE_URL", clickhouse_server.url("cli"))
    for args in (["warehouse", "migrate"], ["warehouse", "load", str(sim), "--no-progress"],
                 ["warehouse", "query", "top_stations", "-p", "limit=3"], ["warehouse", "status"]):
        app(args, standalone_mode=False)
    out = capsys.readouterr().out
    assert "applied 4 migration(s)" in out and "loaded" in out and "station_id" in out and "18.16" in out


def test_backfill_migration(clickhouse_server, sim: Path, own_tmp: Path) -> None:
    with connect(clickhouse_server.url("backfill")) as w:
        contract.check_backfill_migration(w, sim, own_tmp)

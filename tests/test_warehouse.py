"""Warehouse on embedded chdb: the shared contract (also run on a real server in tests/integration/),
plus the chdb-only and engine-independent parts (modern queries, URL parsing, owner process, CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.integration import warehouse_contract as contract
from warehouse import Warehouse, WarehouseError, connect, parse_url
from warehouse.engine import ChdbWarehouse, migration_files
from warehouse.queries import QUERIES


@pytest.fixture(scope="module")
def sim() -> Path:
    for d in contract.private_tmp("sim"):
        yield contract.make_simulation(d)


@pytest.fixture
def own_tmp() -> Path:
    yield from contract.private_tmp("t")


@pytest.fixture(scope="module")
def wh_path() -> Path:
    """chdb runs one data directory per process: every test here uses this one, isolated by database."""
    yield from contract.private_tmp("wh")


@pytest.fixture(scope="module")
def wh(wh_path: Path) -> Warehouse:
    """One migrated embedded warehouse for the ordered contract checks of this module."""
    w = connect(f"chdb://{wh_path}?database=contract")
    assert isinstance(w, ChdbWarehouse) and w.migrate()
    yield w
    w.close()


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


@pytest.mark.parametrize("name", sorted(n for n, q in QUERIES.items() if q.modern_only))
def test_modern_only_queries_run_on_chdb(wh: Warehouse, name: str) -> None:
    df = wh.named_query(name)
    assert len(df) > 0


def test_reveal_pii_is_audited(wh: Warehouse, sim: Path) -> None:
    from warehouse.pii import reveal_member_pii

    members = pd.read_parquet(sim / "members.parquet")
    m = members.iloc[3]
    got = reveal_member_pii(wh, m.member_id, sm4_key_hex=contract.SM4, actor="analyst-7", reason="KYC ticket 42")
    assert got == {"id_number": m.id_number, "phone": m.phone}
    audit = wh.query_df("SELECT actor, action, subject FROM audit_log WHERE subject = {s:String}",
                        {"s": m.member_id})
    assert list(audit.actor) == ["analyst-7"] and list(audit.action) == ["reveal_member_pii"]
    with pytest.raises(ValueError):
        reveal_member_pii(wh, m.member_id, sm4_key_hex=contract.SM4, actor="", reason="")


def test_changed_migration_is_refused(own_tmp: Path, wh_path: Path) -> None:
    mig = own_tmp / "mig"
    mig.mkdir()
    (mig / "0001_t.sql").write_text("CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = MergeTree() ORDER BY x;\n")
    with connect(f"chdb://{wh_path}?database=migtest") as w:
        assert w.migrate(mig) == ["0001_t.sql"]
        assert w.migrate(mig) == []
        (mig / "0001_t.sql").write_text("CREATE TABLE IF NOT EXISTS t (x UInt16) ENGINE = MergeTree() ORDER BY x;\n")
        with pytest.raises(WarehouseError, match="changed after it was applied"):
            w.migrate(mig)


def test_migration_files_are_numbered() -> None:
    files = migration_files()
    assert [v for v, _, _ in files] == list(range(1, len(files) + 1))


def test_parse_url() -> None:
    assert parse_url("chdb:///abs/wh") == {"engine": "chdb", "path": Path("/abs/wh")}
    assert parse_url("chdb:///abs/wh?database=x") == {"engine": "chdb", "path": Path("/abs/wh"), "database": "x"}
    assert parse_url("chdb://var/warehouse") == {"engine": "chdb", "path": Path("var/warehouse")}
    p = parse_url("clickhouse://u:p%40ss@db.example:9001/analytics")
    assert p == {"engine": "clickhouse", "host": "db.example", "port": 9001, "user": "u", "password": "p@ss",
                 "database": "analytics"}
    assert parse_url("clickhouse://127.0.0.1")["database"] == "fuelcard"
    with pytest.raises(WarehouseError):
        parse_url("mysql://x")


def test_settings_default_url_means_data_dir(own_tmp: Path) -> None:
    from fuelcard.settings import load_settings
    from warehouse.engine import resolve_url

    assert resolve_url(load_settings(data_dir=own_tmp)) == f"chdb://{own_tmp}/warehouse"
    assert resolve_url(load_settings()) == "chdb://var/warehouse"
    assert resolve_url(load_settings(warehouse_url="clickhouse://h:9000/x")) == "clickhouse://h:9000/x"


def test_one_directory_per_process(wh: Warehouse, own_tmp: Path) -> None:
    with pytest.raises(WarehouseError, match="one data directory per process"):
        connect("chdb://" + str(own_tmp / "other"))


def test_second_process_is_locked_out_without_owner(wh: Warehouse, wh_path: Path) -> None:
    """chdb's limit, made explicit: a second process cannot open a directory this one holds."""
    code = ("import sys\nfrom warehouse import connect, WarehouseLocked\n"
            "try:\n    connect(sys.argv[1])\nexcept WarehouseLocked:\n    print('locked')\n")
    r = subprocess.run([sys.executable, "-c", code, f"chdb://{wh_path}"], capture_output=True, text=True, timeout=60)
    assert "locked" in r.stdout, r.stdout + r.stderr[-500:]


def test_owner_process_serves_other_processes(wh_path: Path, sim: Path) -> None:
    """Embedded mode: the owner serves reads and (deduplicated) writes to another process."""
    from warehouse.service import serve_in_thread

    path = wh_path
    with serve_in_thread(path, database="owned") as owned:
        assert owned.url.startswith("warehouse+http://127.0.0.1:191")
        code = (
            "import sys, pandas as pd\nfrom warehouse import connect\nfrom warehouse.loader import load_dir\n"
            "wh = connect(sys.argv[1])\nprint(type(wh).__name__)\n"
            "load_dir(wh, sys.argv[2], progress=False)\n"
            "print('top', len(wh.named_query('top_stations', limit=3)))\n"
            "try:\n    wh.named_query('nope')\nexcept Exception as e:\n    print(type(e).__name__)\n"
        )
        r = subprocess.run([sys.executable, "-c", code, "chdb://" + str(path), str(sim)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split() == ["ServiceWarehouse", "top", "3", "ParamError"]
        tx = pd.read_parquet(sim / "transactions.parquet")
        assert owned.wh.query_value("SELECT count() FROM fact_transactions FINAL") == len(tx)
    assert not (path / "owner.json").exists()


def test_cli_on_chdb(own_tmp: Path, wh_path: Path, sim: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from fuelcard.cli import app
    from fuelcard.commands.common import CliError

    monkeypatch.setenv("FUELCARD_WAREHOUSE_URL", f"chdb://{wh_path}?database=cli")
    app(["warehouse", "migrate"], standalone_mode=False)
    app(["warehouse", "migrate"], standalone_mode=False)
    app(["warehouse", "load", str(sim), "--no-progress"], standalone_mode=False)
    app(["warehouse", "query", "sales_daily", "--out", str(own_tmp / "s.csv")], standalone_mode=False)
    app(["warehouse", "queries"], standalone_mode=False)
    app(["warehouse", "status"], standalone_mode=False)
    out = capsys.readouterr().out
    assert "applied 4 migration(s)" in out and "applied 0 migration(s)" in out
    assert "fact_transactions" in out and "sales_7d_moving_avg" in out
    assert len(pd.read_csv(own_tmp / "s.csv")) > 0
    for bad in (["warehouse", "query", "nope"], ["warehouse", "query", "top_stations", "-p", "limit=x"],
                ["warehouse", "load", str(own_tmp / "missing")], ["warehouse", "query", "top_stations", "-p", "x"]):
        with pytest.raises(CliError):
            app(bad, standalone_mode=False)


def test_backfill_migration(wh_path: Path, sim: Path, own_tmp: Path) -> None:
    with connect(f"chdb://{wh_path}?database=backfill") as w:
        contract.check_backfill_migration(w, sim, own_tmp)

"""`fuelcard train ...`: point-in-time sources, the CLI (exit codes, idempotence), the warehouse path with its
``model_versions`` table."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
from typer.testing import CliRunner

from fuelcard.commands import train_jobs as tj
from fuelcard.commands.train import app
from models.registry import Registry
from tests.test_train_fixtures import sim_dir

runner = CliRunner()


def _cli(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def test_parquet_source_reads_only_before_the_cutoff():
    src = tj.ParquetSource(sim_dir())
    cut = src.last_date() - timedelta(days=30)
    for name, col in (("transactions", "ts"), ("station_sales", "date"), ("station_hourly", "ts_hour")):
        df = src.read(name, before=cut)
        assert len(df) > 0
        assert tj._naive_utc(df[col]).max() < pd.Timestamp(cut)
    since = cut - timedelta(days=10)
    df = src.read("prices", since=since, before=cut)
    assert pd.to_datetime(df["date"]).min() >= pd.Timestamp(since)
    assert len(src.read("stations")) > 0  # dimensions are not time-filtered


def test_cli_trains_sites_and_is_idempotent(tmp_path):
    reg = tmp_path / "reg"
    args = ("sites", "--from-dir", str(sim_dir()), "--registry", str(reg), "--json", "--reports",
            str(tmp_path / "reports"))
    r1 = _cli(*args)
    assert r1.exit_code == 0, r1.output
    rec = json.loads(r1.output.strip().splitlines()[-1])
    assert rec["status"] == "registered" and rec["kind"] == "sites"
    assert rec["metrics"]["topk_captured_unserved"] > rec["metrics"]["baseline_captured_unserved"]
    r2 = _cli(*args)
    assert r2.exit_code == 0
    assert json.loads(r2.output.strip().splitlines()[-1])["status"] == "up-to-date"
    registry = Registry(reg)
    assert len(registry.versions("sites")) == 1
    d = registry.path("sites")
    for f in ("heatmap.png", "top_sites.csv", "baseline_density_only.csv", "station_suggestions.csv", "model.pkl",
              "meta.json"):
        assert (d / f).exists(), f
    assert (tmp_path / "reports" / "sites" / "heatmap.png").exists()
    assert (tmp_path / "reports" / "sites" / "VERSION").read_text().strip() == rec["version"]
    meta = registry.meta("sites", rec["version"])
    assert rec["version"].startswith("sites-" + meta.data_window["as_of"].replace("-", ""))


def test_cli_errors_are_one_line(tmp_path):
    r = _cli("sites", "--from-dir", str(tmp_path / "nope"), "--registry", str(tmp_path / "r"), "--reports",
             str(tmp_path / "rep"))
    assert r.exit_code != 0
    r = _cli("sites", "--from-dir", str(sim_dir()), "--as-of", "not-a-date", "--registry", str(tmp_path / "r"))
    assert r.exit_code != 0
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("pricing", "--from-dir", str(empty), "--registry", str(tmp_path / "r"))
    assert r.exit_code != 0


def test_cli_subprocess_exit_codes(tmp_path):
    import subprocess
    import sys

    empty = tmp_path / "empty"
    empty.mkdir()
    p = subprocess.run([sys.executable, "-m", "fuelcard.cli", "train", "pricing", "--from-dir", str(empty),
                        "--registry", str(tmp_path / "r"), "-q"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("error:") and p.stderr.strip().count("\n") == 0


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory):
    """A tiny simulation loaded into an embedded (chdb) warehouse through the warehouse engineer's loader."""
    from fuelcard.simulator import SimConfig, simulate, write
    from warehouse import connect
    from warehouse.loader import load_dir

    root = tmp_path_factory.mktemp("wh")
    write(simulate(SimConfig(seed=5, days=45, stations=8, members=250)), root / "sim")
    wh = connect(f"chdb://{root / 'wh'}")
    load_dir(wh, root / "sim", progress=False)
    yield wh, root
    wh.close()


def test_warehouse_source_and_model_versions_table(tiny_warehouse):
    wh, root = tiny_warehouse
    src = tj.WarehouseSource(wh)
    last = src.last_date()
    assert last is not None and last >= date(2026, 1, 1)
    as_of = last + timedelta(days=1) - timedelta(days=7)
    tx = src.read("transactions", before=as_of, columns=["tx_id", "ts"])
    assert len(tx) > 0 and tj._naive_utc(tx["ts"]).max() < pd.Timestamp(as_of)
    assert "points" in src.read("redemptions").columns or src.read("redemptions").empty
    prices = src.read("prices", before=as_of)
    assert {"price_fen", "cost_fen"} <= set(prices.columns) and (prices["cost_fen"] > 0).all()
    ctx = tj.TrainContext(source=src, registry=Registry(root / "reg"), as_of=as_of, warehouse=wh,
                          options={"plots": False})
    out = tj.run_job(ctx, "sites")
    assert out.created
    again = tj.run_job(ctx, "sites")
    assert not again.created  # idempotent: same data, same version, nothing registered
    rows = wh.query_df("SELECT kind, version, as_of, promoted, metrics FROM model_versions FINAL")
    assert list(rows["kind"]) == ["sites"] and list(rows["version"]) == [out.version]
    assert (rows["promoted"] == 1).all()
    assert str(pd.Timestamp(rows["as_of"].iloc[0]).date()) == str(as_of)
    assert "topk_captured_unserved" in json.loads(rows["metrics"].iloc[0])


def test_pricing_without_future_data_backtests_against_the_truth(tmp_path):
    """Production-style cut-off (end of data): the job backtests its last 28 days under the true response."""
    src = tj.ParquetSource(sim_dir())
    ctx = tj.TrainContext(source=src, registry=Registry(tmp_path / "reg"), as_of=tj.default_as_of(src),
                          truth_path=sim_dir() / "ground_truth" / "truth.json", options={"plots": False})
    out = tj.run_job(ctx, "pricing")
    assert "backtest" in out.metrics["evaluation"]
    assert out.metrics["true_profit_uplift"] >= 0.10
    assert out.metrics["eval_days"] == 28

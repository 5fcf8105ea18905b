"""`fuelcard fraud backtest` contract: six-column data from another generator, formats, label delay, bad input."""

import subprocess
import sys
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from benchmarks.fraudgen import START, generate
from models.fraud.metrics import card_precision_at_k
from models.fraud.train import TrainParams, TransactionsError, backtest, parse_ts, prepare_transactions

D0 = START.date()
WIN = {"train_start": D0 + timedelta(days=10), "train_end": D0 + timedelta(days=29),
       "test_start": D0 + timedelta(days=33), "test_end": D0 + timedelta(days=37)}
FAST = TrainParams(max_rounds=60, seed=7)


@pytest.fixture(scope="module")
def six() -> pd.DataFrame:
    df, _ = generate(n_customers=160, n_terminals=300, days=38, seed=4)
    return df


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fuelcard.cli", "fraud", *args], capture_output=True, text=True,
                          timeout=300)


def _args(path, out, **over):
    w = {k.replace("_", "-"): str(v) for k, v in {**WIN, **over}.items()}
    return ["backtest", "--transactions", str(path), "--train-start", w["train-start"], "--train-end",
            w["train-end"], "--test-start", w["test-start"], "--test-end", w["test-end"], "--label-delay-days", "3",
            "--out", str(out)]


def test_cli_six_columns_iso_strings_and_missing_labels(tmp_path, six):
    df = six.copy()
    df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S%z")  # ISO strings
    df["card_id"] = "card-" + df["card_id"].astype(str)
    df["is_fraud"] = df["is_fraud"].astype("Int64").astype(object)
    df.loc[df.index % 17 == 0, "is_fraud"] = None  # unknown labels
    src = tmp_path / "tx.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "scores.csv"
    r = _cli(*_args(src, out))
    assert r.returncode == 0, r.stderr
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["tx_id", "score"]
    ts = pd.to_datetime(df["ts"], utc=True)
    lo, hi = pd.Timestamp(WIN["test_start"], tz="UTC"), pd.Timestamp(WIN["test_end"] + timedelta(1), tz="UTC")
    in_test = (ts >= lo) & (ts < hi)
    assert sorted(scores["tx_id"]) == sorted(df.loc[in_test, "tx_id"])
    assert scores["score"].between(0, 1).all()
    rep = tmp_path / "rep"
    from typer.testing import CliRunner

    from fuelcard.commands.fraud import app

    r = CliRunner().invoke(app, ["report", "--transactions", str(src), "--scores", str(out), "--out", str(rep)])
    assert r.exit_code == 0, r.output
    assert "AUC ROC" in (rep / "fraud_report.txt").read_text()
    assert (rep / "pr_curve.png").exists() and (rep / "score_distributions.png").exists()


@pytest.mark.parametrize("case,expect", [
    ("missing_column", "missing required column"),
    ("bad_date", "is not a date"),
    ("bad_label", "is_fraud"),
    ("bad_ts", "ts"),
    ("empty", "empty"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, six, case, expect):
    df = six.head(500).copy()
    src = tmp_path / "tx.csv"
    extra = {}
    if case == "missing_column":
        df = df.drop(columns=["station_id"])
    elif case == "bad_date":
        extra = {"test_start": "2025-13-40"}
    elif case == "bad_label":
        df["is_fraud"] = df["is_fraud"].astype(object)
        df.loc[3, "is_fraud"] = "maybe"
    elif case == "bad_ts":
        df["ts"] = df["ts"].astype(object)
        df.loc[5, "ts"] = "not a time"
    if case == "empty":
        src.write_text("")
    else:
        df.to_csv(src, index=False)
    out = tmp_path / "scores.csv"
    r = _cli(*_args(src, out, **extra))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error:") and r.stderr.strip().count("\n") == 0 and expect in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".scores*"))


def test_label_younger_than_delay_never_changes_a_score(six):
    delay = 3
    base = backtest(six, **WIN, label_delay_days=delay, params=FAST)
    ts = six["ts"].to_numpy(dtype=float)
    test_ts = base.test["ts"].to_numpy()
    for target in (0, len(test_ts) - 1):
        t_i = test_ts[target]
        flipped = six.copy()
        young = ts > t_i - delay * 86400
        flipped.loc[young, "is_fraud"] = 1 - flipped.loc[young, "is_fraud"]
        res = backtest(flipped, **WIN, label_delay_days=delay, params=FAST)
        assert res.scores["score"].iloc[target] == base.scores["score"].iloc[target]
    # and old labels do matter (the check above is not vacuous)
    old = ts < test_ts[0] - 12 * 86400
    changed = six.copy()
    changed.loc[old, "is_fraud"] = 0
    res = backtest(changed, **WIN, label_delay_days=delay, params=FAST)
    assert not np.allclose(res.scores["score"], base.scores["score"])


def test_backtest_beats_chance_on_other_generator(six):
    from models.fraud.metrics import auc_roc

    res = backtest(six, **WIN, label_delay_days=3, params=FAST)
    assert auc_roc(res.test["is_fraud"].to_numpy(), res.scores["score"].to_numpy()) > 0.8


def test_timestamp_formats():
    secs = pd.Series([1_767_225_600, 1_767_225_660])
    np.testing.assert_array_equal(parse_ts(secs), [1_767_225_600.0, 1_767_225_660.0])
    np.testing.assert_array_equal(parse_ts(secs * 1000), [1_767_225_600.0, 1_767_225_660.0])
    iso = pd.Series(["2026-01-01T00:00:00Z", "2026-01-01 08:01:00+08:00"])
    np.testing.assert_array_equal(parse_ts(iso), [1_767_225_600.0, 1_767_225_660.0])
    with pytest.raises(TransactionsError):
        parse_ts(pd.Series(["yesterday", "2026-01-01"]))


def test_prepare_handles_int_ids_and_nan_ids():
    raw = pd.DataFrame({"tx_id": [1, 2, 3], "ts": [10, 20, 30], "card_id": [5.0, np.nan, 5.0],
                        "station_id": [7, 7, 8], "amount": [1.5, 2.25, 3], "is_fraud": [0, np.nan, 1]})
    df = prepare_transactions(raw)
    assert df["card_id"].tolist()[0] == "5" and df["card_id"].iloc[1].startswith("__missing_")
    assert df["amount_fen"].tolist() == [150, 225, 300]
    assert np.isnan(df["is_fraud"].iloc[1])


def test_card_precision_at_k():
    day = 86400.0
    d = pd.DataFrame({"ts": [0, 0, 0, day, day, day], "card_id": ["a", "b", "c", "a", "b", "c"],
                      "score": [0.9, 0.8, 0.1, 0.9, 0.2, 0.8], "is_fraud": [1, 0, 0, 1, 0, 1]})
    # day 1: top-2 {a, b} -> 1/2 ; a is detected and dropped on day 2: top-2 {c, b} -> 1/2
    assert card_precision_at_k(d, k=2) == 0.5


def test_window_dates_checked(six):
    with pytest.raises(TransactionsError):
        backtest(six, train_start=D0, train_end=D0 + timedelta(days=5), test_start=date(2030, 1, 1),
                 test_end=date(2030, 1, 2), label_delay_days=3, params=FAST)

"""Demand forecasting: frequency inference, robustness, interval coverage, accuracy vs seasonal naive, CLI,
replenishment and leak alerts, model contract."""

import sys

import numpy as np
import pandas as pd
import pytest

from models.demand import (
    DemandModel,
    backtest_frame,
    forecast_frame,
    forecast_series,
    holiday_features,
    infer_frequency,
    leak_alerts,
    regularize,
    replenishment_plan,
    synthetic_series,
)


def test_infer_frequency_variants():
    d = pd.Series(pd.date_range("2024-01-01", periods=60, freq="D"))
    assert infer_frequency(d).kind == "D"
    assert infer_frequency(pd.Series(pd.date_range("2024-01-01", periods=30, freq="W-WED"))).kind == "W"
    assert infer_frequency(pd.Series(pd.date_range("2020-01-01", periods=30, freq="MS"))).kind == "M"
    no_sundays = d[d.dt.weekday != 6]
    f = infer_frequency(no_sundays)
    assert f.kind == "B" and f.season == 6
    assert all(x.weekday() != 6 for x in f.next_dates(no_sundays.iloc[-1], 14))


def test_regularize_duplicates_gaps_and_order():
    dates = pd.Series(pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-01", "2024-01-05"]))
    vals = pd.Series([3.0, 1.0, 1.0, 5.0])
    daily = infer_frequency(pd.Series(pd.date_range("2024-01-01", periods=10, freq="D")))
    s = regularize(dates, vals, daily)
    assert list(s.index.day) == [1, 2, 3, 4, 5]
    assert s.iloc[0] == 2.0  # duplicates summed
    assert s.notna().all()


def test_holiday_features_known_days():
    h = holiday_features(pd.DatetimeIndex(["2024-02-10", "2024-02-04", "2024-10-01", "2030-01-01"]))
    assert h.loc["2024-02-10", "hol_spring"] == 1
    assert h.loc["2024-02-04", "hol_workday"] == 1  # Sunday working day before the Spring Festival
    assert h.loc["2024-10-01", "hol_other"] == 1
    assert h.loc["2030-01-01"].sum() == 0  # outside the calendar: no features, no crash


@pytest.mark.parametrize("kind", ["short", "zeros", "negative", "constant", "one", "intermittent"])
def test_forecast_series_edge_cases(kind):
    r = np.random.default_rng(0)
    idx = pd.date_range("2024-01-01", periods=40, freq="D")
    y = {
        "short": pd.Series([5.0, 6.0, 7.0, 6.0, 5.0], index=idx[:5]),
        "zeros": pd.Series(np.zeros(40), index=idx),
        "negative": pd.Series(r.normal(0, 5, 40), index=idx),
        "constant": pd.Series(np.full(40, 3.0), index=idx),
        "one": pd.Series([4.0], index=idx[:1]),
        "intermittent": pd.Series(r.poisson(0.3, 40).astype(float), index=idx),
    }[kind]
    fc = forecast_series(y, 10, infer_frequency(pd.Series(idx)))
    assert len(fc.forecast) == 10 and len(fc.dates) == 10
    assert np.all(np.isfinite(fc.forecast)) and np.all(fc.lower <= fc.forecast + 1e-9)
    assert np.all(fc.upper >= fc.forecast - 1e-9)
    if y.min() >= 0:
        assert fc.lower.min() >= 0 and fc.forecast.min() >= 0
    assert fc.dates[0] > y.index[-1]


@pytest.fixture(scope="module")
def daily():
    return synthetic_series(12, days=600, seed=5)


def test_backtest_daily_beats_seasonal_naive_and_covers(daily):
    per, s = backtest_frame(daily, date_col="date", value_col="sales", id_col="item", horizon=28)
    assert s["mase"] < s["mase_snaive"]
    assert s["wape"] < s["wape_snaive"]
    assert 0.65 <= s["coverage80"] <= 0.95


def test_backtest_weekly():
    w = synthetic_series(8, days=160, freq="W", seed=2)
    per, s = backtest_frame(w, date_col="date", value_col="sales", id_col="item", horizon=8)
    assert s["frequency"] == "W"
    assert s["mase"] <= s["mase_snaive"] * 1.05
    assert 0.55 <= s["coverage80"] <= 1.0


def test_model_contract(daily, tmp_path):
    sub = daily[daily["item"].isin(["item000", "item001"])]
    m = DemandModel.fit(sub, date_col="date", value_col="sales", id_col="item", horizon=14, backtest=False)
    again = DemandModel.load(m.save(tmp_path))
    pd.testing.assert_frame_equal(again.predict(), m.predict())
    m2 = DemandModel.fit(sub, date_col="date", value_col="sales", id_col="item", horizon=14, backtest=False)
    pd.testing.assert_frame_equal(m2.predict(), m.predict())  # deterministic
    p = m.predict("item001")
    assert len(p) == 14 and (p["lower"] <= p["forecast"]).all() and (p["forecast"] <= p["upper"]).all()


def test_concatenated_frames_with_repeated_index_labels(daily):
    a = daily[daily["item"] == "item000"].reset_index(drop=True)
    b = daily[daily["item"] == "item001"].reset_index(drop=True)
    both = pd.concat([a, b])  # index labels repeat: grouping must be positional
    fc, _ = forecast_frame(both, date_col="date", value_col="sales", id_col="item", horizon=7)
    one, _ = forecast_frame(a, date_col="date", value_col="sales", id_col="item", horizon=7)
    np.testing.assert_allclose(fc[fc["id"] == "item000"]["forecast"].to_numpy(), one["forecast"].to_numpy())


def test_forecast_frame_order_and_parallel(daily):
    sub = daily[daily["item"].isin(["item003", "item001"])].sample(frac=1.0, random_state=0)
    fc, info = forecast_frame(sub, date_col="date", value_col="sales", id_col="item", horizon=5)
    assert list(dict.fromkeys(fc["id"])) == list(dict.fromkeys(sub["item"]))
    assert info["frequency"] == "D"


def _cli(args, capsys):
    from fuelcard import cli

    old = sys.argv
    sys.argv = ["fuelcard", "demand", "backtest", *args]
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def test_cli_daily_with_ids(tmp_path, daily, capsys):
    f = tmp_path / "s.csv"
    daily[daily["item"].isin(["item000", "item002"])].to_csv(f, index=False)
    out = tmp_path / "o.csv"
    code, err = _cli(["--series", str(f), "--date-col", "date", "--value-col", "sales", "--id-col", "item",
                      "--horizon", "10", "--out", str(out)], capsys)
    assert code == 0, err
    res = pd.read_csv(out)
    assert list(res.columns) == ["id", "date", "forecast", "lower", "upper"]
    assert len(res) == 20 and res.groupby("id").size().eq(10).all()
    assert (res["lower"] <= res["forecast"]).all() and (res["forecast"] <= res["upper"]).all()
    last = pd.to_datetime(daily["date"]).max()
    assert pd.to_datetime(res["date"]).min() == last + pd.Timedelta(days=1)


def test_cli_weekly_single_series_parquet(tmp_path, capsys):
    w = synthetic_series(1, days=80, freq="W", seed=1).drop(columns="item")
    w = pd.concat([w, w.iloc[[5]]])  # a duplicate date is summed, not an error
    f = tmp_path / "w.parquet"
    w.to_parquet(f)
    out = tmp_path / "o.csv"
    code, err = _cli(["--series", str(f), "--date-col", "date", "--value-col", "sales", "--horizon", "6",
                      "--out", str(out)], capsys)
    assert code == 0, err
    res = pd.read_csv(out)
    assert list(res.columns) == ["date", "forecast", "lower", "upper"] and len(res) == 6
    assert (pd.to_datetime(res["date"]).diff().dropna() == pd.Timedelta(days=7)).all()


def test_cli_bad_inputs(tmp_path, capsys):
    good = synthetic_series(1, days=30, seed=1)
    bad_date = good.astype({"date": str}).copy()
    bad_date.loc[3, "date"] = "31/31/2024x"
    bad_date.to_csv(tmp_path / "bad.csv", index=False)
    good.to_csv(tmp_path / "good.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    out = tmp_path / "o.csv"
    cases = [
        ["--series", str(tmp_path / "bad.csv"), "--date-col", "date", "--value-col", "sales"],
        ["--series", str(tmp_path / "empty.csv"), "--date-col", "date", "--value-col", "sales"],
        ["--series", str(tmp_path / "good.csv"), "--date-col", "day", "--value-col", "sales"],
        ["--series", str(tmp_path / "good.csv"), "--date-col", "date", "--value-col", "item"],
    ]
    for args in cases:
        code, err = _cli([*args, "--horizon", "5", "--out", str(out)], capsys)
        assert code == 2, (args, err)
        assert err.startswith("error:") and err.strip().count("\n") == 0
        assert not out.exists()


def test_replenishment_and_leaks():
    dates = pd.date_range("2024-03-01", periods=10, freq="D")
    fc = pd.DataFrame({"station_id": "S1", "product": "92", "date": dates, "forecast": 1000.0,
                       "lower": 800.0, "upper": 1200.0})
    tanks = pd.DataFrame({"tank_id": ["T1", "T2"], "station_id": ["S1", "S1"], "product": ["92", "92"],
                          "capacity_l": [20000, 20000], "lead_time_days": [2, 2]})
    plan = replenishment_plan(fc, tanks, pd.DataFrame({"tank_id": ["T1", "T2"], "level_l": [900.0, 15000.0]}))
    t1, t2 = plan.set_index("tank_id").loc["T1"], plan.set_index("tank_id").loc["T2"]
    assert t1["order_now"] and t1["order_l"] > 0 and not t2["order_now"]
    assert t1["safety_stock_l"] == pytest.approx(200.0)  # (upper - forecast) x lead time x tank share
    r = np.random.default_rng(0)
    days = pd.date_range("2024-01-01", periods=60, freq="D")
    sales = r.normal(3000, 200, 60)
    exp_close = 20000 - sales
    loss = np.where((np.arange(60) >= 30) & (np.arange(60) < 45), 150.0, 0.0) + r.normal(0, 10, 60)
    readings = pd.DataFrame({"date": days, "tank_id": "T1", "station_id": "S1", "opening_l": 20000.0,
                             "sales_l": sales, "delivery_l": 0.0, "expected_closing_l": exp_close,
                             "closing_l": exp_close - loss})
    alerts = leak_alerts(readings)
    assert len(alerts) == 1
    a = alerts.iloc[0]
    assert pd.Timestamp(a["start_date"]) <= pd.Timestamp("2024-02-05") and a["mean_loss_l_per_day"] > 50


def test_extra_regressors_are_used_when_given():
    r = np.random.default_rng(3)
    dates = pd.date_range("2024-01-01", periods=200, freq="D")
    x = pd.DataFrame({"rain": r.gamma(1.0, 5.0, 200)}, index=dates)
    y = 500 - 8 * x["rain"].to_numpy() + r.normal(0, 5, 200)
    df = pd.DataFrame({"id": "a", "date": dates[:170], "v": y[:170]})
    with_x, _ = forecast_frame(df, date_col="date", value_col="v", id_col="id", horizon=30, exog={"a": x})
    without, _ = forecast_frame(df, date_col="date", value_col="v", id_col="id", horizon=30)
    actual = y[170:]
    err_x = np.abs(with_x["forecast"].to_numpy() - actual).mean()
    err_0 = np.abs(without["forecast"].to_numpy() - actual).mean()
    assert err_x < 0.5 * err_0

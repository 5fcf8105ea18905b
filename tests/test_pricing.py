"""Pricing: point-in-time frame, ≥10 drivers, elasticities vs the simulator's truth, constraints, and the
≥10% true gross-profit uplift over the current policy."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from models import pricing
from tests.test_train_fixtures import HOLDOUT_DAYS, sim_dir

CUTOFF_TABLES = ("station_sales", "prices", "competitor_prices", "crude", "weather", "calendar", "station_hourly")


@lru_cache(maxsize=1)
def _setup():
    d = sim_dir()
    t = {n: pd.read_parquet(d / f"{n}.parquet") for n in (*CUTOFF_TABLES, "stations", "competitors")}
    last = pd.to_datetime(t["station_sales"]["date"]).max()
    cutoff = (last + pd.Timedelta(days=1) - pd.Timedelta(days=HOLDOUT_DAYS)).normalize()
    frame = pricing.build_frame(sales=t["station_sales"], prices=t["prices"], stations=t["stations"],
                                competitor_prices=t["competitor_prices"], competitors=t["competitors"],
                                crude=t["crude"], weather=t["weather"], calendar=t["calendar"],
                                station_hourly=t["station_hourly"], cutoff=cutoff)
    model = pricing.fit(frame, cutoff=cutoff)
    rec = pricing.recommend(model, pricing.reference_rows(frame))
    truth = json.loads((d / "ground_truth" / "truth.json").read_text())
    return t, cutoff, frame, model, rec, truth


def test_frame_is_point_in_time():
    t, cutoff, frame, *_ = _setup()
    assert pd.to_datetime(frame["date"]).max() < cutoff
    # changing everything on/after the cut-off changes nothing before it
    future = pd.to_datetime(t["station_sales"]["date"]) >= cutoff
    sales2 = t["station_sales"].copy()
    sales2.loc[future, "litres"] *= 10
    hourly2 = t["station_hourly"].copy()
    hourly2.loc[pd.to_datetime(hourly2["ts_hour"]).dt.tz_localize(None) >= cutoff, "litres"] *= 10
    frame2 = pricing.build_frame(sales=sales2, prices=t["prices"], stations=t["stations"],
                                 competitor_prices=t["competitor_prices"], competitors=t["competitors"],
                                 crude=t["crude"], weather=t["weather"], calendar=t["calendar"],
                                 station_hourly=hourly2, cutoff=cutoff)
    pd.testing.assert_frame_equal(frame, frame2)


def test_regression_has_ten_drivers_and_diagnostics():
    *_, model, _rec, _truth = _setup()
    drivers = set(model.coef_table["driver"])
    required = {"own_price", "competitor_gap", "price_x_competition", "crude_price", "weekday", "holiday",
                "hour_of_day_traffic", "season", "weather", "station_type", "region"}
    assert required <= drivers, required - drivers
    d = model.diagnostics
    assert d["r2"] > 0.5
    for k in ("condition_number", "durbin_watson", "jarque_bera_p", "breusch_pagan_p", "max_vif_price_terms"):
        assert np.isfinite(d[k])
    text = pricing.coefficient_text(model)
    assert "price_dev" in text and "condition_number" in text


def test_elasticities_match_the_true_response():
    t, _cutoff, _frame, model, _rec, truth = _setup()
    true = pd.Series(truth["price_response"]["total_own_price_elasticity"])
    comp = t["stations"].set_index("station_id")["competitors_3km"].reindex(true.index)
    est = pd.Series(model.elasticity(pricing.competition_density(comp)), index=true.index)
    assert (est - true).abs().mean() < 0.6, pd.DataFrame({"true": true, "est": est, "comp": comp})
    # denser competition -> more elastic, as in the truth
    assert np.corrcoef(est, true)[0, 1] > 0.8


def test_recommendations_respect_constraints():
    *_, model, rec, _truth = _setup()
    cfg = model.config
    assert (rec["target_fen"] >= rec["floor_fen"] - 1).all()
    assert (rec["target_fen"] <= rec["ceiling_fen"] + 1).all()
    assert (rec["floor_fen"] >= rec["cost_fen"] * (1 + cfg.min_margin) - 1).all()
    move = (rec["first_day_fen"] - rec["price_fen"]).abs() / rec["price_fen"]
    assert (move <= rec["max_daily_change"] + 1.5 / rec["price_fen"]).all()
    band = (rec["target_fen"] / rec["price_fen"] - 1).abs()
    for cls, (step, total) in (("monopoly", cfg.monopoly_limits), ("dense", cfg.dense_limits)):
        sel = rec["cls"] == cls
        assert (band[sel] <= total + 0.002).all()
        assert (rec.loc[sel, "max_daily_change"] == step).all()
    assert cfg.monopoly_limits[1] < cfg.dense_limits[1]  # conservative near monopolies, flexible when dense
    assert rec["reason"].str.len().gt(20).all()
    path = pricing.price_path(rec, 10)
    steps = np.abs(np.diff(np.c_[rec["price_fen"].to_numpy(), path], axis=1))
    assert (steps <= (rec["max_daily_change"].to_numpy() * rec["price_fen"].to_numpy())[:, None] + 1).all()
    summary = pricing.region_summary(rec)
    assert {"region", "product", "mean_change_pct"} <= set(summary.columns)


def test_true_profit_uplift_at_least_ten_percent():
    t, cutoff, _frame, _model, rec, truth = _setup()
    end = cutoff + timedelta(days=HOLDOUT_DAYS)

    def future(name):
        df = t[name]
        d = pd.to_datetime(df["date"])
        return df[(d >= cutoff) & (d < end)]

    response = pricing.TrueResponse.from_truth(truth, stations=t["stations"])
    assert response.card_cap == pytest.approx(0.25)
    ev = pricing.evaluate_policy(rec, future_prices=future("prices"), future_sales=future("station_sales"),
                                 future_competitor_prices=future("competitor_prices"), stations=t["stations"],
                                 competitors=t["competitors"], response=response)
    assert ev.metrics["eval_days"] == HOLDOUT_DAYS
    assert ev.metrics["true_profit_uplift"] >= 0.10, ev.metrics
    # recommended daily prices never move more than the class's daily cap relative to the list price
    d = ev.detail
    ratio = d["price_new_fen"] / d["price_fen"] - 1
    assert (ratio.abs() <= d["max_daily_change"] * HOLDOUT_DAYS + 0.01).all()


def test_true_response_matches_truth_formula():
    t, *_rest, truth = _setup()
    response = pricing.TrueResponse.from_truth(truth)
    sid = next(s for s, c in response.gap_coef.items() if c != 0)
    g = response.gap_coef[sid]
    r = response.log_effect([sid], [800.0], [780.0], [790.0])
    assert r[0] == pytest.approx(-0.4 * np.log(800 / 780) + g * np.log(800 / 790))
    assert response.guide_price(["92"], [truth["config"]["start"]], [0.0])[0] == pytest.approx(
        truth["price_response"]["guide_price_fen"]["92"][0])


def test_prediction_tolerates_missing_drivers_and_unknown_stations():
    *_, frame, model, _rec, _truth = _setup()
    rows = frame.tail(5)[["date", "station_id", "product", "price_fen"]].copy()
    y = model.predict_volume(rows)
    assert np.isfinite(y).all() and (y > 0).all()
    rows["station_id"] = "S-NEW"
    assert np.isfinite(model.predict_volume(rows)).all()


def test_diagnostics_png(tmp_path):
    *_, frame, model, _rec, _truth = _setup()
    p = pricing.plot_diagnostics(model, frame, tmp_path / "diag.png")
    assert p.stat().st_size > 10_000

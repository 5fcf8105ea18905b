"""Churn survival model: contract (save/load, determinism, missing inputs, ranges), encoder, metrics, CLI."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from models.churn import (
    ChurnModel,
    CovariateEncoder,
    brier_at,
    concordance,
    fit_churn_model,
    plot_km_by_segment,
    segment_members,
    synthetic_customers,
    time_dependent_auc,
)
from models.common import coerce_event, coerce_numeric


@pytest.fixture(scope="module")
def telco():
    return synthetic_customers(1500, seed=3)


@pytest.fixture(scope="module")
def model(telco):
    return fit_churn_model(telco.iloc[:500], duration_col="tenure", event_col="Churn", horizon=12,
                           exclude=("customerID",), seed=0, candidates=("cox", "weibull"))


def test_event_coercion_variants():
    assert coerce_event(pd.Series(["Yes", "No", "yes "])).tolist() == [1.0, 0.0, 1.0]
    assert coerce_event(pd.Series([True, False])).tolist() == [1.0, 0.0]
    assert coerce_event(pd.Series(["True", "False"])).tolist() == [1.0, 0.0]
    assert coerce_event(pd.Series([1, 0, 0])).tolist() == [1.0, 0.0, 0.0]
    assert coerce_event(pd.Series(["churned", "active"])).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError):
        coerce_event(pd.Series(["a", "b", "c"]))


def test_numeric_strings_with_blanks():
    s = coerce_numeric(pd.Series(["29.85", " ", "1889.5", ""]))
    assert s is not None and s.isna().sum() == 2
    assert coerce_numeric(pd.Series(["DSL", "Fiber optic"])) is None


def test_encoder_handles_strings_constants_ids(telco):
    enc = CovariateEncoder().fit(telco, exclude={"tenure", "Churn"})
    assert enc.dropped["customerID"] == "high-cardinality"
    assert enc.dropped["PhoneService"] == "constant"
    x = enc.transform(telco.head(50))
    assert list(x.columns) == enc.columns and not x.isna().any().any()
    # missing covariates at scoring time are imputed, unseen levels tolerated
    odd = telco.head(5).drop(columns=["MonthlyCharges"]).assign(Contract="Ten years")
    assert not enc.transform(odd).isna().any().any()


def test_model_contract(model, telco, tmp_path):
    score = telco.iloc[1100:].drop(columns=["tenure", "Churn"])
    p = model.predict_proba(score)
    assert p.shape == (len(score),) and np.all((p >= 0) & (p <= 1)) and not np.isnan(p).any()
    path = model.save(tmp_path)
    again = ChurnModel.load(path)
    np.testing.assert_allclose(again.predict_proba(score), p)
    m2 = fit_churn_model(telco.iloc[:500], duration_col="tenure", event_col="Churn", horizon=12,
                         exclude=("customerID",), seed=0, candidates=("cox", "weibull"))
    np.testing.assert_allclose(m2.predict_proba(score), p)
    # useful: beats random clearly on held-out rows
    test = telco.iloc[1100:]
    y = (test["Churn"] == "Yes").to_numpy()
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y, p) > 0.75
    assert model.encoder.dropped.get("TotalCharges", "").startswith("duration proxy")


def test_conditional_probability_uses_tenure(model, telco):
    rows = telco.iloc[1100:1110].drop(columns=["Churn"])
    uncond = model.predict_proba(rows.drop(columns=["tenure"]))
    cond = model.predict_proba(rows)
    assert not np.allclose(uncond, cond)
    # beyond the last observed tenure the Cox baseline is extrapolated, so probabilities do not collapse to 0
    far = rows.assign(tenure=500)
    assert np.all(model.predict_proba(far) > 0)


def test_degenerate_training_data_never_crashes():
    df = pd.DataFrame({"t": [1, 2, 3, 4, 5, 6], "e": ["No"] * 6, "x": ["a"] * 6})
    m = fit_churn_model(df, duration_col="t", event_col="e", horizon=3)
    p = m.predict_proba(df.drop(columns=["t", "e"]))
    assert np.all((p >= 0) & (p <= 1))
    # perfectly separating covariate: penalizer keeps it finite
    r = np.random.default_rng(0)
    n = 120
    sep = r.integers(0, 2, n)
    df2 = pd.DataFrame({"t": r.exponential(10, n) + 0.1, "e": sep, "x": sep, "noise": r.normal(size=n)})
    p2 = fit_churn_model(df2, duration_col="t", event_col="e", horizon=5,
                         candidates=("cox", "weibull")).predict_proba(df2)
    assert np.all(np.isfinite(p2)) and np.all((p2 >= 0) & (p2 <= 1))


def test_metrics_sanity():
    r = np.random.default_rng(1)
    risk = r.normal(size=500)
    t = r.exponential(np.exp(-risk))
    e = np.ones(500)
    assert concordance(t, e, risk) > 0.6
    prob = 1 - np.exp(-np.exp(risk) * 1.0)
    assert time_dependent_auc(t, e, prob, 1.0) > 0.6
    assert 0 <= brier_at(t, e, prob, 1.0) <= 1


def test_segments_and_km_png(tmp_path):
    r = np.random.default_rng(2)
    df = pd.DataFrame({"member_id": range(300), "spend_90": r.gamma(2, 500, 300),
                       "churn_probability": r.uniform(size=300)})
    seg = segment_members(df)
    assert set(seg["action_level"]) <= {0, 1, 2, 3, 4}
    hi = seg[(seg.value_tier == "high") & (seg.risk_band == "high")]
    assert (hi["action_level"] == 4).all()
    png = plot_km_by_segment(r.exponential(50, 300), r.integers(0, 2, 300), seg["risk_band"], tmp_path / "km.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def _cli(*args, capsys=None):
    """Run the real entry point in-process (imports are already warm); returns (exit code, stderr)."""
    from fuelcard import cli

    old = sys.argv
    sys.argv = ["fuelcard", "churn", "backtest", *args]
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
    return code, capsys.readouterr().err if capsys else ""


def test_cli_telco_like(tmp_path, telco, capsys):
    train = telco.iloc[:700]
    score = telco.iloc[1000:1200].drop(columns=["tenure", "Churn"])
    train.to_csv(tmp_path / "train.csv", index=False)
    score.to_csv(tmp_path / "score.csv", index=False)
    out = tmp_path / "out.csv"
    r = _cli("--train", str(tmp_path / "train.csv"), "--score", str(tmp_path / "score.csv"),
             "--id-col", "customerID", "--duration-col", "tenure", "--event-col", "Churn", "--horizon", "12",
             "--out", str(out), capsys=capsys)
    assert r[0] == 0, r[1]
    res = pd.read_csv(out)
    assert list(res.columns) == ["id", "churn_probability"]
    assert res["id"].tolist() == score["customerID"].tolist()
    assert res["churn_probability"].between(0, 1).all() and res["churn_probability"].notna().all()


def test_cli_bad_input_one_line_no_output(tmp_path, telco, capsys):
    telco.iloc[:100].to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    out = tmp_path / "out.csv"
    base = ["--id-col", "customerID", "--duration-col", "tenure", "--event-col", "Churn", "--horizon", "12",
            "--out", str(out)]
    for train, score, extra in [
        ("train.csv", "train.csv", ["--event-col", "NoSuchColumn"]),
        ("empty.csv", "train.csv", []),
        ("train.csv", "missing.csv", []),
    ]:
        args = ["--train", str(tmp_path / train), "--score", str(tmp_path / score), *base, *extra]
        code, err = _cli(*args, capsys=capsys)
        assert code == 2, (args, err)
        assert err.strip().count("\n") == 0 and err.startswith("error:")
        assert not out.exists()


def test_cli_subprocess_one_line_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    r = subprocess.run([sys.executable, "-m", "fuelcard.cli", "churn", "backtest", "--train",
                        str(tmp_path / "empty.csv"), "--score", str(tmp_path / "empty.csv"), "--id-col", "id",
                        "--duration-col", "t", "--event-col", "e", "--horizon", "3", "--out",
                        str(tmp_path / "o.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o.csv").exists()


def _member_fixture(n=160, days=300, seed=4):
    r = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-01")
    members = pd.DataFrame({
        "member_id": [f"M{i:04d}" for i in range(n)],
        "tier": r.choice(["standard", "silver", "gold"], n),
        "joined": start - pd.to_timedelta(r.integers(10, 700, n), unit="D"),
        "fills_per_week": r.uniform(0.5, 3, n),
    })
    hazard = 0.004 * np.exp(-0.8 * (members["tier"] == "gold") - 0.5 * np.log(members["fills_per_week"]))
    t = r.exponential(1 / hazard)
    members["churn_date"] = [start + pd.Timedelta(days=int(x)) if x < days else None for x in t]
    members["churned"] = members["churn_date"].notna()
    rows = []
    for i, m in members.iterrows():
        stop = min(days, t[i])
        k = r.poisson(m["fills_per_week"] / 7 * stop)
        ts = start + pd.to_timedelta(np.sort(r.uniform(0, stop, k)), unit="D")
        rows.append(pd.DataFrame({"ts": ts.tz_localize("UTC"), "member_id": m["member_id"], "station_id": "S1",
                                  "amount": r.gamma(3, 100, k), "litres": r.gamma(3, 10, k),
                                  "status": "captured"}))
    return members, pd.concat(rows, ignore_index=True)


def test_member_features_and_job_tolerate_missing_inputs(tmp_path):
    from models.churn import build_churn_features, train_member_churn

    members, tx = _member_fixture()
    feats = build_churn_features(tx, members.drop(columns=["fills_per_week"]), as_of="2025-06-01")
    expected = {"recency_days", "freq_90", "freq_trend", "spend_90", "spend_trend", "tier", "points_expiring",
                "complaints_total", "fill_trend_slope", "price_sensitivity"}
    assert expected <= set(feats.columns) and len(feats) == len(members)
    assert feats.drop(columns=["price_sensitivity", "tier", "member_id"]).notna().all().all()
    # point in time: events after as_of do not change the features
    later = build_churn_features(tx[tx["ts"] < pd.Timestamp("2025-06-01", tz="UTC")], members, as_of="2025-06-01")
    pd.testing.assert_frame_equal(later, build_churn_features(tx, members, as_of="2025-06-01"))
    model, metrics, scored = train_member_churn(tx, members, end="2025-10-28", horizon_days=90, seed=0,
                                                landmarks=1, candidates=("cox",), km_path=tmp_path / "km.png")
    assert (tmp_path / "km.png").read_bytes()[:4] == b"\x89PNG" and metrics["segments"]
    assert {"concordance", "auc_90d", "brier_90d"} <= set(metrics)
    assert scored["churn_probability"].between(0, 1).all()
    assert {"segment", "action", "action_level"} <= set(scored.columns)

"""Fraud model contract: compiled trees == LightGBM, explanations, save/load, registry, determinism."""

import numpy as np
import pytest

from fuelcard.features import FEATURE_INDEX, FEATURE_NAMES
from models.fraud import FraudModel, ModelHandle, load_current, register_model
from models.fraud.compiled import MISSING, trees_from_lightgbm
from models.fraud.train import TrainParams, threshold_for_fpr, train_model

FEATS = ["amount", "card_n_24h", "amount_vs_mean_30d", "secs_since_last", "st_rate_30d", "new_station_30d",
         "hour_local", "card_mean_30d"]


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATS)))
    X[rng.random(X.shape) < 0.15] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 2]) + 0.5 * rng.normal(size=n)) > 2.2).astype(float)
    full = np.full((n, len(FEATURE_NAMES)), np.nan)
    for k, f in enumerate(FEATS):
        full[:, FEATURE_INDEX[f]] = X[:, k]
    return X, y, full


@pytest.fixture(scope="module")
def trained():
    X, y, full = _data()
    ts = np.arange(len(y), dtype=float)
    model = train_model(full, y, ts, FEATS, params=TrainParams(max_rounds=80, seed=3), version="fraud-test-1")
    return model, full, y


def test_compiled_trees_equal_lightgbm():
    import lightgbm as lgb

    X, y, full = _data()
    Xf = np.where(np.isnan(X), MISSING, X)
    booster = lgb.train({"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1, "seed": 1},
                        lgb.Dataset(Xf, y), num_boost_round=60)
    model = FraudModel("v", FEATS, trees_from_lightgbm(booster))
    ref = booster.predict(Xf, raw_score=True)
    got = model._forest.raw_many(full)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    one = [model._forest.raw(r) for r in full[:200].tolist()]
    np.testing.assert_allclose(one, ref[:200], atol=1e-9)


def test_scores_in_range_and_explanations_add_up(trained):
    model, full, _ = trained
    rows = full[:300].tolist()
    s = np.array([model.score(r) for r in rows])
    assert ((s >= 0) & (s <= 1)).all()
    np.testing.assert_allclose(s, model.score_many(full[:300]), atol=1e-12)
    margin, contrib = model._forest.contributions(rows[0])
    assert abs(sum(contrib) - (margin - model._forest.bias)) < 1e-9
    top = model.explain(rows[int(np.argmax(s))], k=3)
    assert top and all(name in FEATS and c > 0 for name, _, c in top)


def test_thresholds_respect_target_fpr(trained):
    model, _, _ = trained
    assert 0 < model.review_threshold <= model.decline_threshold <= 1
    legit = np.random.default_rng(1).random(10_000)
    thr = threshold_for_fpr(legit, 0.003)
    assert (legit >= thr).mean() <= 0.003
    assert (legit >= np.nextafter(thr, -1) - 1e-3).mean() > 0.003 - 1e-3


def test_training_is_deterministic_under_seed():
    X, y, full = _data(2000, seed=5)
    ts = np.arange(len(y), dtype=float)
    a = train_model(full, y, ts, FEATS, params=TrainParams(max_rounds=40, seed=9), version="a")
    b = train_model(full, y, ts, FEATS, params=TrainParams(max_rounds=40, seed=9), version="a")
    assert a.to_dict()["trees"] == b.to_dict()["trees"]
    assert (a.calib_a, a.calib_b, a.review_threshold) == (b.calib_a, b.calib_b, b.review_threshold)


def test_save_load_round_trip_and_registry(tmp_path, trained):
    model, full, _ = trained
    model.save(tmp_path / "m")
    loaded = FraudModel.load(tmp_path / "m")
    rows = full[:100].tolist()
    assert [loaded.score(r) for r in rows] == [model.score(r) for r in rows]
    assert loaded.features == model.features and loaded.version == model.version
    root = tmp_path / "artifacts"
    assert load_current(root) is None
    handle = ModelHandle(root, check_every_s=0.0)
    assert handle.get() is None  # rules-only until a model is promoted
    register_model(model, root)
    assert (root / "fraud" / model.version / "model.json").exists()
    assert load_current(root).version == model.version
    assert handle.get().version == model.version
    v2 = FraudModel.from_dict({**model.to_dict(), "version": "fraud-test-2"})
    register_model(v2, root)
    assert handle.get().version == "fraud-test-2"  # swapped without a restart


def test_missing_features_tolerated(trained):
    model, _, _ = trained
    s = model.score([float("nan")] * len(FEATURE_NAMES))
    assert 0.0 <= s <= 1.0

"""The compiled tree evaluator (models/fraud/_treeval.pyx) gives the same bits as the pure-Python one."""

import math
import random
import struct
import sys
import types

import numpy as np
import pytest

from fuelcard.features import FEATURE_INDEX, FEATURE_NAMES, CardProfile, FeatureConfig, FeatureEngine, Tx
from fuelcard.rules import load_rules
from fuelcard.scoring import score_one
from models.fraud import FraudModel
from models.fraud import compiled as compiled_mod
from models.fraud.compiled import MISSING, CompiledForest, TreeArrays, trees_from_lightgbm

SPECIAL = [MISSING, -MISSING, -1e35, 1e35, 0.0, -0.0, math.inf, -math.inf, 1.0, -1.0, 0.5]


def _bits(v):
    return struct.pack("<d", v)


def _random_tree(rng, n_model_features, max_depth=5):
    t = TreeArrays([], [], [], [], [], [], [], [])

    def node(depth):
        if depth >= max_depth or (depth > 0 and rng.random() < 0.3):
            t.leaf_value.append(rng.uniform(-1, 1))
            return ~(len(t.leaf_value) - 1)
        i = len(t.feature)
        t.feature.append(rng.randrange(n_model_features))
        r = rng.random()
        t.threshold.append(rng.choice(SPECIAL) if r < 0.25 else rng.gauss(0, 1))
        t.default_left.append(rng.random() < 0.5)
        t.nan_as_zero.append(rng.random() < 0.5)
        t.node_value.append(rng.uniform(-1, 1))
        t.left.append(0)
        t.right.append(0)
        t.left[i] = node(depth + 1)
        t.right[i] = node(depth + 1)
        return i

    root = node(0)
    if root < 0:
        return TreeArrays([0], [math.inf], [root], [root], [True], [False], [t.leaf_value[~root]], t.leaf_value)
    return t


def _random_rows(rng, n, thresholds):
    rows = []
    for _ in range(n):
        row = []
        for _ in FEATURE_NAMES:
            r = rng.random()
            if r < 0.15:
                row.append(math.nan)
            elif r < 0.25:
                row.append(MISSING)
            elif r < 0.35:
                row.append(rng.choice(SPECIAL))
            elif r < 0.5:
                row.append(rng.choice(thresholds))  # exactly on a split
            elif r < 0.55:
                row.append(rng.randrange(-3, 4))  # ints are read as floats
            else:
                row.append(rng.gauss(0, 1.5))
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def random_forest():
    rng = random.Random(11)
    feats = rng.sample(FEATURE_NAMES, 30)
    trees = [_random_tree(rng, len(feats)) for _ in range(150)]
    cols = [FEATURE_INDEX[f] for f in feats]
    pure = CompiledForest(trees, cols, len(feats), "pure")
    fast = CompiledForest(trees, cols, len(feats), "compiled")
    thresholds = sorted({th for t in trees for th in t.threshold})
    return pure, fast, _random_rows(rng, 3000, thresholds)


def test_extension_is_built_and_current():
    # make setup (pip install -e .) builds it; a missing or stale build must fail here, not pass silently
    assert compiled_mod.treeval_extension() is not None, compiled_mod._EXT_PROBLEM
    assert compiled_mod.treeval_extension().ABI == compiled_mod.TREEVAL_ABI


def test_raw_bit_for_bit_on_random_trees_and_nan_inputs(random_forest):
    pure, fast, rows = random_forest
    assert pure.evaluator == "pure" and fast.evaluator == "compiled"
    for row in rows:
        assert _bits(fast.raw(row)) == _bits(pure.raw(row))
    # any sequence (tuple, numpy row) reads the same
    for row in rows[:200]:
        assert _bits(fast.raw(tuple(row))) == _bits(pure.raw(row))
        assert _bits(fast.raw(list(np.asarray(row, dtype=float)))) == _bits(pure.raw(row))
    X = np.array(rows, dtype=float)
    got = fast.raw_many(X)
    ref = np.array([pure.raw(r) for r in X.tolist()])
    assert got.tobytes() == ref.tobytes()
    assert pure.raw_many(X).tobytes() == ref.tobytes()


def test_contributions_and_top_features_bit_for_bit(random_forest):
    pure, fast, rows = random_forest
    for row in rows[:1500]:
        s_p, c_p = pure.contributions(row)
        s_f, c_f = fast.contributions(row)
        assert _bits(s_p) == _bits(s_f) == _bits(pure.raw(row))
        assert [_bits(v) for v in c_p] == [_bits(v) for v in c_f]
        for k in (1, 3, 10):
            assert fast.top_positive(row, k) == pure.top_positive(row, k)


def test_ties_in_contributions_keep_feature_order():
    # two stumps on different features with the same gain: the lower model feature index comes first
    t1 = TreeArrays([0], [0.0], [-1], [-2], [True], [False], [0.0], [0.5, -0.5])
    t2 = TreeArrays([1], [0.0], [-1], [-2], [True], [False], [0.0], [0.5, -0.5])
    cols = [FEATURE_INDEX["amount"], FEATURE_INDEX["card_n_1h"]]
    row = [0.0] * len(FEATURE_NAMES)
    pure = CompiledForest([t2, t1], cols, 2, "pure")
    fast = CompiledForest([t2, t1], cols, 2, "compiled")
    assert fast.top_positive(row, 2) == pure.top_positive(row, 2) == [(0, 0.5), (1, 0.5)]


def test_lightgbm_model_same_bits_and_same_decisions():
    import lightgbm as lgb

    rng = np.random.default_rng(4)
    n = 3000
    feats = ["amount", "card_n_24h", "amount_vs_mean_30d", "secs_since_last", "new_station_30d", "hour_local",
             "card_mean_30d", "dist_prev_km", "st_rate_30d"]
    X = rng.normal(size=(n, len(feats)))
    X[rng.random(X.shape) < 0.2] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 2]) + 0.5 * rng.normal(size=n)) > 2.0).astype(float)
    Xf = np.where(np.isnan(X), MISSING, X)
    booster = lgb.train({"objective": "binary", "num_leaves": 31, "max_depth": 5, "verbose": -1, "num_threads": 1,
                         "seed": 1}, lgb.Dataset(Xf, y), num_boost_round=120)
    trees = trees_from_lightgbm(booster)
    pure = FraudModel("v", feats, trees, 1.3, -0.2, 0.2, 0.6).use_evaluator("pure")
    fast = FraudModel("v", feats, trees, 1.3, -0.2, 0.2, 0.6).use_evaluator("compiled")
    assert (pure.evaluator, fast.evaluator) == ("pure", "compiled")
    full = np.full((n, len(FEATURE_NAMES)), np.nan)
    for k, f in enumerate(feats):
        full[:, FEATURE_INDEX[f]] = X[:, k]
    np.testing.assert_allclose(fast._forest.raw_many(full), booster.predict(Xf, raw_score=True), rtol=0, atol=1e-9)
    assert fast.score_many(full).tobytes() == pure.score_many(full).tobytes()
    for row in full[:500].tolist():
        assert _bits(fast.score(row)) == _bits(pure.score(row))
        assert fast.explain(row, 3) == pure.explain(row, 3)

    # whole decisions over the real feature engine: same outcome, score, reasons, explanations
    rules = load_rules()
    engines = (FeatureEngine(FeatureConfig()), FeatureEngine(FeatureConfig()))
    prof = CardProfile(card_type="personal", tank_capacity_l=60.0)
    r = np.random.default_rng(9)
    outcomes = set()
    for i in range(3000):
        tx = Tx(f"t{i}", 1_767_225_600.0 + i * 97.0, f"c{r.integers(0, 60)}", f"s{r.integers(0, 15)}",
                int(r.integers(1_000, 900_000)), None, None, "95", float(r.uniform(5, 70)),
                30 + float(r.random()), 120 + float(r.random()), "Shanghai", None)
        d_p = score_one(engines[0].process(tx, prof), pure, rules, tx=tx)
        d_f = score_one(engines[1].process(tx, prof), fast, rules, tx=tx)
        assert d_f == d_p
        assert _bits(d_f.score) == _bits(d_p.score)
        outcomes.add(d_f.outcome.value)
    assert len(outcomes) >= 2  # the comparison covered explained (review/decline) decisions too


def _probe(monkeypatch, fake):
    import models.fraud

    monkeypatch.setitem(sys.modules, "models.fraud._treeval", fake)
    monkeypatch.setattr(models.fraud, "_treeval", fake)
    monkeypatch.setattr(compiled_mod, "_EXT_CHECKED", False)
    monkeypatch.setattr(compiled_mod, "_EXT", None)
    return compiled_mod.treeval_extension()


def test_stale_or_foreign_build_is_refused_with_a_log_line(monkeypatch, caplog):
    real = compiled_mod.treeval_extension()
    stale = types.SimpleNamespace(ABI=real.ABI, SOURCE_SHA256="0" * 64, Forest=real.Forest)
    with caplog.at_level("WARNING", logger="models.fraud.compiled"):
        assert _probe(monkeypatch, stale) is None
    assert "stale build" in caplog.text and "pure-Python" in caplog.text
    other_abi = types.SimpleNamespace(ABI=real.ABI + 1, SOURCE_SHA256=real.SOURCE_SHA256, Forest=real.Forest)
    assert _probe(monkeypatch, other_abi) is None
    # the model still scores, with the pure evaluator; asking for the compiled one is an error
    t = TreeArrays([0], [0.0], [-1], [-2], [True], [False], [0.0], [0.5, -0.5])
    assert CompiledForest([t], [0], 1).evaluator == "pure"
    with pytest.raises(RuntimeError, match="unavailable"):
        CompiledForest([t], [0], 1, "compiled")

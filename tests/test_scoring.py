"""score_one contract: outcomes, reasons, explanations, versions, degraded mode, determinism."""

import numpy as np
import pytest

from fuelcard.events import Decision, Outcome
from fuelcard.features import FEATURE_INDEX, FEATURE_NAMES, CardProfile, FeatureConfig, FeatureEngine, Tx
from fuelcard.rules import load_rules
from fuelcard.scoring import MODEL_REASON_DECLINE, MODEL_REASON_REVIEW, NO_MODEL, Scorer, score_one
from models.fraud.train import TrainParams, train_model

T0 = 1_767_225_600.0


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    n = 3000
    full = np.full((n, len(FEATURE_NAMES)), np.nan)
    amount = rng.gamma(2.0, 150.0, n)
    full[:, FEATURE_INDEX["amount"]] = amount
    full[:, FEATURE_INDEX["card_n_1h"]] = rng.poisson(0.3, n)
    y = ((amount > 900) | (full[:, FEATURE_INDEX["card_n_1h"]] >= 3)).astype(float)
    return train_model(full, y, np.arange(n, dtype=float), ["amount", "card_n_1h"],
                       params=TrainParams(max_rounds=40, seed=1), version="fraud-scoring-test")


def _stream(n=200, seed=2):
    rng = np.random.default_rng(seed)
    return [Tx(f"t{i}", T0 + i * 97.0, f"c{rng.integers(20)}", f"s{rng.integers(5)}", int(rng.integers(100, 120_000)))
            for i in range(n)]


def test_decision_fields_and_range(model):
    rules = load_rules()
    engine = FeatureEngine(FeatureConfig())
    for tx in _stream():
        d = score_one(engine.process(tx), model, rules, tx=tx)
        assert isinstance(d, Decision) and 0.0 <= d.score <= 1.0
        assert d.model_version == "fraud-scoring-test" and d.ruleset_version == rules.version
        assert not d.degraded and d.tx_id == tx.tx_id and d.ts.tzinfo is not None
        if d.outcome is not Outcome.APPROVE:
            assert d.reasons
        if MODEL_REASON_REVIEW in d.reasons or MODEL_REASON_DECLINE in d.reasons:
            assert d.top_features and d.top_features[0].feature in ("amount", "card_n_1h")
        assert Decision.model_validate_json(d.model_dump_json()) == d  # a valid event on the wire


def test_model_band_sets_outcome(model):
    rules = load_rules()
    tx = Tx("big", T0, "c1", "s1", 150_000)
    d = score_one(FeatureEngine(FeatureConfig()).process(tx), model, rules, tx=tx)
    assert d.score >= model.review_threshold and d.outcome in (Outcome.REVIEW, Outcome.DECLINE)
    assert d.top_features[0].feature == "amount" and d.top_features[0].value == 1500.0


def test_rules_only_degraded_mode():
    rules = load_rules()
    engine = FeatureEngine(FeatureConfig())
    tx = Tx("t", T0, "c", "s", 950_000)
    d = score_one(engine.process(tx), None, rules, tx=tx)
    assert d.degraded and d.model_version == NO_MODEL and d.outcome is Outcome.DECLINE
    assert "DAILY_SPEND_EXTREME" in d.reasons and d.top_features
    ok = Tx("u", T0, "c2", "s", 20_000)
    d2 = score_one(engine.process(ok), None, rules, tx=ok)
    assert d2.outcome is Outcome.APPROVE and d2.score == 0.0 and d2.degraded


def test_deterministic(model):
    def run():
        s = Scorer(load_rules(), model, FeatureConfig())
        return [s.decide(tx).model_dump() for tx in _stream()]

    assert run() == run()


def test_missing_optional_columns_tolerated(model):
    s = Scorer(load_rules(), model, FeatureConfig())
    bare = Tx("t1", T0, "c", "s", 20_000)
    rich = Tx("t2", T0 + 60, "c", "s", 20_000, "T1", "d1", "95", 30.0, 31.0, 121.0, "Shanghai")
    for tx in (bare, rich):
        d = s.decide(tx, CardProfile(card_type="personal"))
        assert 0 <= d.score <= 1


def test_scorer_uses_holders(model, tmp_path):
    from fuelcard.rules import ReloadingRuleSet
    from models.fraud import ModelHandle, register_model

    handle = ModelHandle(tmp_path, check_every_s=0.0)
    s = Scorer(ReloadingRuleSet(check_every_s=60), handle, FeatureConfig())
    assert s.decide(Tx("a", T0, "c", "s", 1000)).degraded
    register_model(model, tmp_path)
    assert s.decide(Tx("b", T0 + 1, "c", "s", 1000)).model_version == model.version

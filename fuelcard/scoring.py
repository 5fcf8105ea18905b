"""The risk decision for one authorisation: features + expert rules + ML model → :class:`Decision`.

``score_one`` is pure and lean (no pandas, no validation in the loop): the speed layer, the API and the
benchmarks call it per event. Without a model (registry empty or unavailable) it decides on the rules alone
and marks the decision ``degraded``.

>>> from fuelcard.features import FeatureEngine, FeatureConfig, Tx
>>> from fuelcard.rules import load_rules
>>> engine = FeatureEngine(FeatureConfig())
>>> tx = Tx("t1", 1_767_000_000.0, "c1", "s1", 950_000)
>>> d = score_one(engine.process(tx), None, load_rules(), tx=tx)
>>> d.outcome.value, d.reasons, d.degraded
('decline', ('DAILY_SPEND_HIGH', 'DAILY_SPEND_EXTREME'), True)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from fuelcard.events import Contribution, Decision, Outcome
from fuelcard.features import (
    DEFAULT_CONFIG,
    FEATURE_INDEX,
    CardProfile,
    FeatureConfig,
    FeatureEngine,
    Tx,
)
from fuelcard.rules import SEVERITY_RANK, RuleSet

if TYPE_CHECKING:
    from collections.abc import Sequence

NO_MODEL = "rules-only"
MODEL_REASON_REVIEW = "MODEL_SCORE_REVIEW"
MODEL_REASON_DECLINE = "MODEL_SCORE_DECLINE"
_OUTCOMES = (Outcome.APPROVE, Outcome.REVIEW, Outcome.DECLINE)
# Rules-only score per worst severity (info counts as approve) when the model is unavailable.
_RULE_SCORE = (0.0, 0.6, 0.95)


class FraudScorer(Protocol):
    """What the decision needs from a model (:class:`models.fraud.FraudModel` implements it)."""

    version: str
    review_threshold: float
    decline_threshold: float

    def score(self, x: Sequence[float]) -> float: ...

    def explain(self, x: Sequence[float], k: int = 3) -> list[tuple[str, float, float]]: ...


def score_one(
    features: list[float],
    model: FraudScorer | None,
    rules: RuleSet,
    *,
    tx: Tx,
    region: str | None = None,
    top_k: int = 3,
    explain_all: bool = False,
) -> Decision:
    """Decide on one transaction from its feature vector (:data:`fuelcard.features.FEATURE_NAMES` order).

    The outcome is the stricter of the rules' worst severity and the model's band (score ≥ decline threshold
    → decline, ≥ review threshold → review). Reasons list the rules that fired (ids) and the model band;
    ``top_features`` are the features that pushed the model's score up (computed for review/decline, or
    always with ``explain_all``). ``model=None`` gives the rules-only, ``degraded`` decision.
    """
    fast = rules._fast  # RuleSet.evaluate without its frame: the rule variant of the region, else the default
    hits = (fast.get(region if region is not None else tx.region) or fast[None])(features)
    rank = 0
    reasons: list[str] = []
    if hits:
        for h in hits:
            reasons.append(h.rule_id)
            r = _RANK[h.severity]
            if r > rank:
                rank = r
    top: tuple[Contribution, ...] = ()
    if model is None:
        score = _RULE_SCORE[rank]
        version = NO_MODEL
        degraded = True
        if hits:  # explain a rules-only decision by the features its rules tested
            top = _rule_features(hits, features, rules, top_k)
    else:
        score = model.score(features)
        version = model.version
        degraded = False
        if score >= model.decline_threshold:
            reasons.append(MODEL_REASON_DECLINE)
            rank = 2
        elif score >= model.review_threshold:
            reasons.append(MODEL_REASON_REVIEW)
            if rank < 1:
                rank = 1
        if rank or explain_all:  # explanations only where a reviewer or the customer will read them
            top = tuple(_contribution(n, None if v != v else v, c) for n, v, c in model.explain(features, top_k))
    d = _new(Decision)
    _set_dict(d, {
        "schema_version": 1, "event_id": None, "kind": "decision", "tx_id": tx.tx_id, "card_id": tx.card_id,
        "ts": _fromts(tx.ts, UTC), "outcome": _OUTCOMES[rank], "score": score,
        "reasons": tuple(reasons), "top_features": top, "model_version": version,
        "ruleset_version": rules.version, "degraded": degraded, "latency_ms": None,
    })
    _set_fields_set(d, _DECISION_FIELDS)
    _set_extra(d, None)
    _set_private(d, None)
    return d


_RANK = SEVERITY_RANK
_fromts = datetime.fromtimestamp
_new = object.__new__
_DECISION_FIELDS = frozenset(Decision.model_fields)
_setattr = object.__setattr__
# BaseModel's own slot descriptors: setting through them skips object.__setattr__'s attribute lookup
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _new_decision(values: dict) -> Decision:
    """``Decision.model_construct`` without its per-call field bookkeeping (values are built right above)."""
    d = Decision.__new__(Decision)
    _setattr(d, "__dict__", values)
    _setattr(d, "__pydantic_fields_set__", _DECISION_FIELDS)
    _setattr(d, "__pydantic_extra__", None)
    _setattr(d, "__pydantic_private__", None)
    return d


_CONTRIBUTION_FIELDS = frozenset(Contribution.model_fields)


def _contribution(feature: str, value: float | None, contribution: float) -> Contribution:
    """``Contribution.model_construct(...)`` without its per-call bookkeeping (~10x cheaper; same object)."""
    c = _new(Contribution)
    _set_dict(c, {"feature": feature, "value": value, "contribution": contribution})
    _set_fields_set(c, _CONTRIBUTION_FIELDS)
    _set_extra(c, None)
    _set_private(c, None)
    return c


def _rule_features(hits: list, features: list[float], rules: RuleSet, k: int) -> tuple[Contribution, ...]:
    by_id = {r.rule_id: r for r in rules.rules}
    seen: dict[str, Contribution] = {}
    for h in hits:
        rule = by_id.get(h.rule_id)
        if rule is None:
            continue
        for c in rule.when:
            if c.feature not in seen:
                v = features[FEATURE_INDEX[c.feature]]
                seen[c.feature] = _contribution(c.feature, None if v != v else v, float(SEVERITY_RANK[h.severity]))
    return tuple(seen.values())[:k]


class Scorer:
    """Features + rules + model in one object with in-process state (API, benchmarks, batch replay).

    ``rules`` and ``model`` may be holders with a ``get()`` method (:class:`fuelcard.rules.ReloadingRuleSet`,
    :class:`models.fraud.ModelHandle`) so new rules or a promoted model are picked up without a restart.
    """

    def __init__(self, rules: object, model: object | None = None, config: FeatureConfig | None = None) -> None:
        if config is None:  # the feature parameters the model was trained with, else the defaults
            current = model.get() if model is not None and hasattr(model, "get") else model
            config = current.feature_config() if hasattr(current, "feature_config") else DEFAULT_CONFIG
        self.engine = FeatureEngine(config)
        self.rules = rules
        self.model = model

    @property
    def rules(self) -> object:
        """The rule set (or its reloading holder)."""
        return self._rules

    @rules.setter
    def rules(self, value: object) -> None:
        self._rules = value
        self._rules_get = getattr(value, "get", None)  # resolved once, not per decision

    @property
    def model(self) -> object | None:
        """The model (or its registry handle), None for rules only."""
        return self._model

    @model.setter
    def model(self, value: object | None) -> None:
        self._model = value
        self._model_get = None if value is None else getattr(value, "get", None)

    def _current(self) -> tuple[RuleSet, FraudScorer | None]:
        get = self._rules_get
        rules = self._rules if get is None else get()
        get = self._model_get
        model = self._model if get is None else get()
        return rules, model  # type: ignore[return-value]

    def decide(self, tx: Tx, profile: CardProfile | None = None) -> Decision:
        """Features of ``tx`` (updating the states), then the decision."""
        get = self._rules_get
        rules = self._rules if get is None else get()
        get = self._model_get
        model = self._model if get is None else get()
        return score_one(self.engine.process(tx, profile), model, rules, tx=tx)  # type: ignore[arg-type]

    def decide_rules_only(self, tx: Tx, profile: CardProfile | None = None) -> Decision:
        """The degraded decision (no model), still updating the states."""
        rules, _ = self._current()
        return score_one(self.engine.process(tx, profile), None, rules, tx=tx)

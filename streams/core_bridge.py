"""Bridge to the pure risk scoring core (``fuelcard.features`` / ``fuelcard.rules`` / ``fuelcard.scoring``).

The card's state comes from (and goes back to) the caller — the Faust ``card_state`` table in the stream —
so every decision sees every earlier decided transaction of its card. Station, terminal and device states
are kept per process (they are keyed differently from the card partitioning); with several workers each one
sees its share of a station's traffic (documented in docs/STREAMING.md).

Rules are reloaded when their file changes and the model is re-read when the registry promotes a new version
(``ReloadingRuleSet`` / ``ModelHandle``), so neither needs a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fuelcard.events import Authorisation, Decision


class CoreRiskEngine:
    """``decide(card_state, auth) -> (card_state, decision)`` over the real scoring core."""

    def __init__(self, *, artifacts_dir: str | Path | None = None, rules_path: str | Path | None = None,
                 profiles: dict[str, Any] | None = None, model: Any = None) -> None:
        from fuelcard import features, rules, scoring

        self._features = features
        self._score_one = scoring.score_one
        self.rules = rules.ReloadingRuleSet(rules_path) if hasattr(rules, "ReloadingRuleSet") \
            else rules.load_rules(rules_path)
        self.model = model
        if model is None and artifacts_dir is not None:
            from models.fraud import ModelHandle

            # No promoted version yet → the handle yields None (rules-only) until one is promoted.
            self.model = ModelHandle(artifacts_dir)
        self.fe = features.FeatureEngine()
        self.profiles = profiles or {}

    def _current(self) -> tuple[Any, Any]:
        rules = self.rules.get() if hasattr(self.rules, "get") else self.rules
        model = self.model.get() if self.model is not None and hasattr(self.model, "get") else self.model
        return rules, model

    @property
    def model_version(self) -> str:
        _, model = self._current()
        return str(getattr(model, "version", "rules-only"))

    @property
    def ruleset_version(self) -> str:
        rules, _ = self._current()
        return str(getattr(rules, "version", "unknown"))

    def decide(self, state: Any | None, auth: Authorisation) -> tuple[Any, Decision]:
        """Features from the given card state (+ process-local station/terminal/device state), then decide."""
        tx = self._features.tx_from_event(auth)
        cards = self.fe.cards
        if state is not None:
            cards[tx.card_id] = state
        else:
            cards.pop(tx.card_id, None)
        vec = self.fe.process(tx, self.profiles.get(tx.card_id))
        new_state = cards.pop(tx.card_id)  # the card state lives in the caller's store, not here
        rules, model = self._current()
        return new_state, self._score_one(vec, model, rules, tx=tx)

    def dump_state(self, state: Any) -> Any:
        """JSON-ready form of a card state (for the table's changelog)."""
        return state.to_dict()

    def state_bytes(self, state: Any) -> bytes:
        """The state's own compact serialisation (same JSON as :meth:`dump_state`, without the dict)."""
        return state.to_bytes()

    def load_state(self, d: Any) -> Any:
        """Inverse of :meth:`dump_state`."""
        return self._features.CardState.from_dict(d)

    def decide_degraded(self, auth: Authorisation) -> Decision:
        """Rules only, on the authorisation alone (no card history, no model): marked ``degraded``."""
        tx = self._features.tx_from_event(auth)
        card_state, card_feats = self._features.update_card(None, tx, self.profiles.get(tx.card_id))
        del card_state
        n_rest = len(self._features.FEATURE_NAMES) - len(card_feats)
        vec = list(card_feats) + [float("nan")] * n_rest
        rules, _ = self._current()
        return self._score_one(vec, None, rules, tx=tx)  # model=None: the core marks it degraded


def build(artifacts_dir: str | Path | None = None) -> CoreRiskEngine:
    """The core engine, smoke-tested once; raises (loudly) when the scoring core is not importable or usable."""
    try:
        engine = CoreRiskEngine(artifacts_dir=artifacts_dir)
        from datetime import UTC, datetime

        probe = Authorisation(tx_id="bridge-probe", ts=datetime(2026, 1, 1, tzinfo=UTC), card_id="bridge-probe",
                              station_id="bridge-probe", product="95", amount_fen=100)
        engine.decide(None, probe)
        engine.decide_degraded(probe)
        engine.fe = engine._features.FeatureEngine()  # forget the probe
    except Exception as exc:
        raise RuntimeError(f"the risk scoring core cannot be loaded (registry {artifacts_dir!s}): "
                           f"{type(exc).__name__}: {exc}") from exc
    return engine

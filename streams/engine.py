"""The risk engine as the stream and the API see it: a thin adapter over the pure scoring core.

``decide(state, auth) -> (state, decision)`` is the only thing the agents and the API call. The state is the
per-card state of the scoring core, wrapped in a :class:`CardRecord` that also remembers the card's recent
decided transaction ids: a redelivered authorisation (at-least-once delivery) is recognised and produces no
second effect.

:func:`load_engine` uses the real scoring core (``fuelcard.features`` / ``fuelcard.rules`` /
``fuelcard.scoring``) when it is importable and falls back to :class:`BaselineEngine`, a small rules-only
scorer with its own per-card state, otherwise. Both share ``decide_degraded`` (rules on the authorisation
alone, no per-card history) for when the stream side is unavailable.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any, Protocol

import orjson

from fuelcard.events import FUELS, Authorisation, Contribution, Decision, Outcome

RECENT_TX_IDS = 64


@dataclass(frozen=True)
class CardRecord:
    """What the card_state table stores per card: the core's state plus recent decided tx ids."""

    state: Any
    recent: tuple[str, ...] = ()

    def seen(self, tx_id: str) -> bool:
        """True when this transaction was already decided for the card."""
        return tx_id in self.recent

    def advance(self, state: Any, tx_id: str) -> CardRecord:
        """New record after deciding ``tx_id``."""
        return CardRecord(state, (*self.recent[-(RECENT_TX_IDS - 1):], tx_id))


def dump_record(rec: CardRecord, engine: Any = None) -> bytes:
    """Serialise a card record for the table / changelog.

    Engines that can turn their state into JSON (``dump_state``/``load_state``) get a compact orjson record;
    anything else is pickled.
    """
    if engine is not None and hasattr(engine, "dump_state"):
        return orjson.dumps({"s": engine.dump_state(rec.state) if rec.state is not None else None,
                             "r": rec.recent})
    return pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL)


def load_record(raw: bytes | None, engine: Any = None) -> CardRecord | None:
    """Inverse of :func:`dump_record` (None for a card never seen)."""
    if not raw:
        return None
    if raw[:1] == b"{":
        d = orjson.loads(raw)
        state = engine.load_state(d["s"]) if d["s"] is not None and engine is not None else d["s"]
        return CardRecord(state, tuple(d["r"]))
    # Only our own changelog topic is ever read here (same trust domain as the code itself).
    return pickle.loads(raw)  # noqa: S301


class RiskEngine(Protocol):
    """What the stream and the API need from the scoring core."""

    model_version: str
    ruleset_version: str

    def decide(self, state: Any | None, auth: Authorisation) -> tuple[Any, Decision]:
        """Update the card's state with the authorisation and decide it."""
        ...

    def decide_degraded(self, auth: Authorisation) -> Decision:
        """Rules on the authorisation alone (no per-card state): marked ``degraded``."""
        ...


# ---------------------------------------------------------------- baseline (until the real core lands)


@dataclass(frozen=True)
class BaselineState:
    """Minimal per-card state: recent (ts, amount) within 24 h and the last station position."""

    recent: tuple[tuple[datetime, int], ...] = ()
    last_ts: datetime | None = None
    last_lat: float | None = None
    last_lon: float | None = None
    stations: frozenset[str] = frozenset()


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))


# (rule id, severity weight, reason)
_STATELESS_RULES: tuple[tuple[str, float, str], ...] = (
    ("R-AMT-HIGH", 0.45, "amount above the single-transaction review threshold"),
    ("R-NIGHT", 0.25, "large purchase at an unusual hour (00:00-05:00 local)"),
    ("R-LITRES-CAP", 0.5, "requested litres exceed any passenger tank"),
)


def _stateless(auth: Authorisation) -> list[tuple[str, float, str]]:
    fired = []
    local_hour = (auth.ts.astimezone(UTC).hour + 8) % 24  # the network lives in UTC+8
    if auth.amount_fen > 150_000:
        fired.append(_STATELESS_RULES[0])
    if local_hour < 5 and auth.amount_fen > 40_000:
        fired.append(_STATELESS_RULES[1])
    if auth.litres is not None and auth.litres > 150 and auth.product in FUELS:
        fired.append(_STATELESS_RULES[2])
    return fired


def _outcome(score: float) -> Outcome:
    if score >= 0.85:
        return Outcome.DECLINE
    if score >= 0.45:
        return Outcome.REVIEW
    return Outcome.APPROVE


class BaselineEngine:
    """A rules-only scorer with a small per-card state; stands in until the real scoring core is importable."""

    model_version = "baseline-rules-0"
    ruleset_version = "baseline-0"

    def decide(self, state: BaselineState | None, auth: Authorisation) -> tuple[BaselineState, Decision]:
        """Update state and decide (velocity, 24 h amount, impossible travel, first visit, stateless rules)."""
        t0 = perf_counter()
        st = state or BaselineState()
        day_ago = auth.ts - timedelta(hours=24)
        recent = tuple(x for x in st.recent if x[0] > day_ago)
        n_1h = sum(1 for ts, _ in recent if ts > auth.ts - timedelta(hours=1))
        amount_24h = sum(a for _, a in recent) + auth.amount_fen
        fired = _stateless(auth)
        feats: dict[str, float] = {"n_1h": float(n_1h), "amount_24h_fen": float(amount_24h)}
        if n_1h >= 3:
            fired.append(("R-VELOCITY-1H", 0.5, "more than 3 fills within one hour"))
        if amount_24h > 400_000:
            fired.append(("R-DAILY-CUM", 0.45, "24 h cumulative amount above limit"))
        if st.last_ts is not None and auth.lat is not None and auth.lon is not None and st.last_lat is not None \
                and st.last_lon is not None:
            km = haversine_km(st.last_lat, st.last_lon, auth.lat, auth.lon)
            hours = max((auth.ts - st.last_ts).total_seconds() / 3600, 1 / 60)
            feats["speed_kmh"] = km / hours
            if km > 50 and km / hours > 250:
                fired.append(("R-IMPOSSIBLE-TRAVEL", 0.9, "two stations too far apart for the time between"))
        new = BaselineState(recent=(*recent, (auth.ts, auth.amount_fen))[-50:], last_ts=auth.ts,
                            last_lat=auth.lat if auth.lat is not None else st.last_lat,
                            last_lon=auth.lon if auth.lon is not None else st.last_lon,
                            stations=(st.stations | {auth.station_id}) if len(st.stations) < 32 else st.stations)
        return new, self._decision(auth, fired, feats, t0, degraded=False)

    def decide_degraded(self, auth: Authorisation) -> Decision:
        """Stateless rules only."""
        return self._decision(auth, _stateless(auth), {}, perf_counter(), degraded=True)

    def _decision(self, auth: Authorisation, fired: list[tuple[str, float, str]], feats: dict[str, float],
                  t0: float, *, degraded: bool) -> Decision:
        score = 1.0 - math.prod(1.0 - w for _, w, _ in fired) if fired else 0.02
        return Decision(
            tx_id=auth.tx_id, card_id=auth.card_id, ts=auth.ts, outcome=_outcome(score), score=round(score, 4),
            reasons=tuple(f"{rid}: {why}" for rid, _, why in fired),
            top_features=tuple(Contribution(feature=k, value=v, contribution=0.0) for k, v in feats.items()),
            model_version=self.model_version, ruleset_version=self.ruleset_version, degraded=degraded,
            latency_ms=round((perf_counter() - t0) * 1000, 3),
        )


# ---------------------------------------------------------------- the real core


class CoreEngine:
    """Adapter over the fraud engineer's pure core: ``update_card`` → ``score_one`` (+ rules-only degraded)."""

    def __init__(self, core: Any, *, model: Any, rules: Any, degraded: Callable[[Authorisation], Decision]):
        self._core = core
        self._model = model
        self._rules = rules
        self._degraded = degraded
        self.model_version = str(getattr(model, "version", "unknown"))
        self.ruleset_version = str(getattr(rules, "version", "unknown"))

    def decide(self, state: Any | None, auth: Authorisation) -> tuple[Any, Decision]:
        t0 = perf_counter()
        new_state, feats = self._core.update_card(state, auth)
        decision = self._core.score_one(feats, self._model, self._rules)
        if decision.latency_ms is None:
            decision = decision.model_copy(update={"latency_ms": round((perf_counter() - t0) * 1000, 3)})
        return new_state, decision

    def decide_degraded(self, auth: Authorisation) -> Decision:
        return self._degraded(auth)


def load_engine(*, artifacts_dir: Any = None, prefer_core: bool = True) -> RiskEngine:
    """The best available engine: the real scoring core when it imports and loads, else the baseline."""
    if prefer_core:
        try:
            from streams import core_bridge

            engine = core_bridge.build(artifacts_dir)
            if engine is not None:
                return engine
        except ImportError:
            pass
    return BaselineEngine()


def mark_degraded(decision: Decision, *, reason: str, latency_ms: float | None = None) -> Decision:
    """Copy of a decision flagged as degraded, with why."""
    return decision.model_copy(update={"degraded": True, "reasons": (*decision.reasons, f"DEGRADED: {reason}"),
                                       "latency_ms": latency_ms if latency_ms is not None else decision.latency_ms})


__all__ = ["BaselineEngine", "BaselineState", "CardRecord", "CoreEngine", "RiskEngine", "dump_record",
           "load_engine", "load_record", "mark_degraded"]

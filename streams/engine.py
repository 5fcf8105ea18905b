"""The risk engine as the stream and the API see it: a thin adapter over the pure scoring core.

``decide(state, auth) -> (state, decision)`` is the only thing the agents and the API call. The state is the
per-card state of the scoring core, wrapped in a :class:`CardRecord` that also remembers the card's recent
decided transaction ids: a redelivered authorisation (at-least-once delivery) is recognised and produces no
second effect.

:func:`load_engine` builds the real scoring core (``fuelcard.features`` / ``fuelcard.rules`` /
``fuelcard.scoring`` + the registry's fraud model, ``streams/core_bridge.py``) and raises when it cannot: a
worker never runs with a stand-in scorer. ``decide_degraded`` (rules on the authorisation alone, no per-card
history) is for when the stream side is unavailable.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from fuelcard.events import Authorisation, Decision

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

    Engines that can turn their state into JSON (``dump_state``/``load_state``) get a compact orjson record
    (``{"r": recent tx ids, "s": state}``; with ``state_bytes`` the state's own serialisation is spliced in
    without an intermediate dict); anything else is pickled.
    """
    state_bytes = getattr(engine, "state_bytes", None)
    if state_bytes is not None:
        s = state_bytes(rec.state) if rec.state is not None else b"null"
        return b'{"r":' + orjson.dumps(rec.recent) + b',"s":' + s + b"}"
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


def load_engine(*, artifacts_dir: Any = None, require_model: bool = False) -> RiskEngine:
    """The real scoring core (features + rule set + the registry's promoted fraud model).

    Fails loudly (raises) when the core cannot be imported or does not work; there is no fallback scorer. With
    no promoted model in ``artifacts_dir`` the core decides rules-only (``model_version == "rules-only"``)
    unless ``require_model`` is set, in which case that is an error too.
    """
    from streams import core_bridge

    engine = core_bridge.build(artifacts_dir)
    if require_model and engine.model_version == "rules-only":
        raise RuntimeError(f"no promoted fraud model in the registry {artifacts_dir!s}")
    return engine


def mark_degraded(decision: Decision, *, reason: str, latency_ms: float | None = None) -> Decision:
    """Copy of a decision flagged as degraded, with why."""
    return decision.model_copy(update={"degraded": True, "reasons": (*decision.reasons, f"DEGRADED: {reason}"),
                                       "latency_ms": latency_ms if latency_ms is not None else decision.latency_ms})


__all__ = ["CardRecord", "RiskEngine", "dump_record", "load_engine", "load_record", "mark_degraded"]

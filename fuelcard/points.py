"""Loyalty points: a pure core with explicit state (no I/O).

One :class:`AccountState` per points account — the family pool when the member belongs to a family (family
pooling), otherwise the member. Every change goes through :func:`apply`, which takes the state and one
:class:`PointsRequest` and returns the new state and the ledger :class:`Movement` s it caused:

* ``accrual`` on a captured purchase (fuel, shop, car wash), ``base rate × tier multiplier``;
* ``reversal`` on a refund (pro rata, several partial refunds allowed) or a cancel/void of a captured purchase;
* ``redemption`` with a balance check (rejected, not partially applied, when the balance is short);
* ``expiry`` of points older than ``policy.expiry_days`` (first in, first out), run before every request.

Idempotent by request id: a redelivered request (same kind and transaction / refund / redemption id) changes
nothing and emits nothing, so at-least-once delivery gives exactly-once effects.

>>> from datetime import datetime, timezone
>>> t = datetime(2026, 3, 1, tzinfo=timezone.utc)
>>> req = PointsRequest(kind="accrual", request_id="tx1", tx_id="tx1", ts=t, account_id="member:m1",
...                     member_id="m1", tier="gold", product="95", amount_fen=30_000)
>>> s, moves = apply(None, req)
>>> s.balance, [m.points for m in moves]
(450, [450])
>>> apply(s, req)[1]     # redelivered: no effect
()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

RequestKind = Literal["accrual", "refund", "cancel", "redemption"]
MovementKind = Literal["accrual", "reversal", "redemption", "expiry", "rejected"]

FUEL_PRODUCTS = frozenset({"92", "95", "98", "diesel"})
NON_FUEL_PRODUCTS = frozenset({"shop", "wash"})


@dataclass(frozen=True)
class PointsPolicy:
    """The loyalty programme's parameters (configurable per region)."""

    tier_multipliers: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(
        {"standard": 1.0, "silver": 1.2, "gold": 1.5, "diamond": 2.0}))
    # Points per yuan spent, per product family.
    points_per_yuan: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(
        {"fuel": 1.0, "shop": 2.0, "wash": 2.0}))
    expiry_days: int = 365
    # Dedupe keys and per-transaction accruals are kept this long (a refund after that is out of policy).
    memory_days: int = 400

    def multiplier(self, tier: str) -> float:
        """Multiplier of a tier; unknown tiers earn like standard."""
        return float(self.tier_multipliers.get(str(tier), self.tier_multipliers.get("standard", 1.0)))


DEFAULT_POLICY = PointsPolicy()


@dataclass(frozen=True)
class Lot:
    """Points earned together (one purchase), spent and expired first-in first-out."""

    source_id: str
    earned_at: datetime
    points: int


@dataclass(frozen=True)
class Accrued:
    """What one purchase earned, to reverse it pro rata on refund."""

    tx_id: str
    ts: datetime
    amount_fen: int
    points: int
    reversed_points: int = 0


@dataclass(frozen=True)
class AccountState:
    """State of one points account: lots (the balance), per-purchase accruals, applied request ids."""

    account_id: str
    lots: tuple[Lot, ...] = ()
    accrued: tuple[Accrued, ...] = ()
    applied: tuple[tuple[str, datetime], ...] = ()
    last_ts: datetime | None = None

    @property
    def balance(self) -> int:
        """Spendable points."""
        return sum(lot.points for lot in self.lots)

    def has_applied(self, key: str) -> bool:
        """True when the request with this dedupe key was already applied."""
        return any(k == key for k, _ in self.applied)


@dataclass(frozen=True)
class PointsRequest:
    """One thing that may move points. ``request_id`` is the id that makes it idempotent.

    accrual: tx_id, amount_fen, product, tier; refund: tx_id, request_id = refund id, amount_fen;
    cancel: tx_id; redemption: request_id = redemption id, points.
    """

    kind: RequestKind
    request_id: str
    ts: datetime
    account_id: str
    member_id: str | None = None
    tx_id: str | None = None
    tier: str = "standard"
    product: str | None = None
    amount_fen: int = 0
    points: int = 0
    item: str | None = None

    @property
    def dedupe_key(self) -> str:
        """Kind plus id: a refund and a capture of the same transaction are different requests."""
        return f"{self.kind}:{self.request_id}"


@dataclass(frozen=True)
class Movement:
    """One ledger line: a signed change of an account's balance (``rejected`` lines change nothing)."""

    movement_id: str
    account_id: str
    ts: datetime
    kind: MovementKind
    points: int
    balance_after: int
    member_id: str | None = None
    tx_id: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (timestamp as ISO 8601)."""
        return {"movement_id": self.movement_id, "account_id": self.account_id, "ts": self.ts.isoformat(),
                "kind": self.kind, "points": self.points, "balance_after": self.balance_after,
                "member_id": self.member_id, "tx_id": self.tx_id, "reason": self.reason}


def account_id_for(member_id: str | None, family_id: str | None = None, *, card_id: str | None = None) -> str:
    """The points account: the family pool when there is a family, else the member, else the card.

    >>> account_id_for("m1", "f9"), account_id_for("m1"), account_id_for(None, card_id="c1")
    ('family:f9', 'member:m1', 'card:c1')
    """
    if family_id:
        return f"family:{family_id}"
    if member_id:
        return f"member:{member_id}"
    return f"card:{card_id}"


def product_family(product: str | None) -> str | None:
    """'fuel', 'shop' or 'wash' (None when the product earns nothing)."""
    p = str(product) if product is not None else None
    if p in FUEL_PRODUCTS:
        return "fuel"
    if p in NON_FUEL_PRODUCTS:
        return p
    return None


def points_for_purchase(amount_fen: int, product: str | None, tier: str, policy: PointsPolicy = DEFAULT_POLICY) -> int:
    """Points earned by a captured purchase: whole yuan × rate × tier multiplier, rounded down.

    >>> points_for_purchase(30_050, "95", "diamond"), points_for_purchase(1_000, "wash", "standard")
    (600, 20)
    """
    fam = product_family(product)
    if fam is None or amount_fen <= 0:
        return 0
    return int((amount_fen // 100) * policy.points_per_yuan.get(fam, 0.0) * policy.multiplier(tier))


def expire(state: AccountState, now: datetime, policy: PointsPolicy = DEFAULT_POLICY
           ) -> tuple[AccountState, tuple[Movement, ...]]:
    """Expire lots earned ``expiry_days`` or more before ``now``; forget dedupe keys past ``memory_days``."""
    cutoff = now - timedelta(days=policy.expiry_days)
    keep: list[Lot] = []
    moves: list[Movement] = []
    balance = state.balance
    for lot in state.lots:
        if lot.earned_at <= cutoff and lot.points > 0:
            balance -= lot.points
            moves.append(Movement(f"expiry:{lot.source_id}", state.account_id, now, "expiry", -lot.points,
                                  balance, tx_id=lot.source_id, reason=f"earned {lot.earned_at.date()}"))
        else:
            keep.append(lot)
    forget = now - timedelta(days=policy.memory_days)
    applied = tuple((k, t) for k, t in state.applied if t > forget)
    accrued = tuple(a for a in state.accrued if a.ts > forget)
    if not moves and len(applied) == len(state.applied) and len(accrued) == len(state.accrued):
        return state, ()
    return replace(state, lots=tuple(keep), applied=applied, accrued=accrued), tuple(moves)


def _take(lots: tuple[Lot, ...], points: int, *, prefer: str | None = None) -> tuple[tuple[Lot, ...], int]:
    """Remove up to ``points`` from lots (the ``prefer`` lot first, then oldest first). Returns (lots, taken)."""
    remaining = points
    order = sorted(range(len(lots)), key=lambda i: (lots[i].source_id != prefer, lots[i].earned_at))
    new = list(lots)
    for i in order:
        if remaining <= 0:
            break
        take = min(new[i].points, remaining)
        new[i] = replace(new[i], points=new[i].points - take)
        remaining -= take
    return tuple(lot for lot in new if lot.points > 0), points - remaining


def apply(state: AccountState | None, req: PointsRequest, policy: PointsPolicy = DEFAULT_POLICY
          ) -> tuple[AccountState, tuple[Movement, ...]]:
    """Apply one request to an account (expiring due lots first). Idempotent by ``req.dedupe_key``."""
    st = state if state is not None else AccountState(account_id=req.account_id)
    if st.has_applied(req.dedupe_key):
        return st, ()
    # Expiry runs on the latest time seen, so an out-of-order (older) request never un-expires anything.
    now = max(req.ts, st.last_ts) if st.last_ts else req.ts
    st, moves = expire(st, now, policy)
    out = list(moves)
    mark = (*st.applied, (req.dedupe_key, req.ts))
    mid = f"{req.kind}:{req.request_id}"

    if req.kind == "accrual":
        pts = points_for_purchase(req.amount_fen, req.product, req.tier, policy)
        tx = req.tx_id or req.request_id
        lots = (*st.lots, Lot(tx, req.ts, pts)) if pts > 0 else st.lots
        st = replace(st, lots=lots, accrued=(*st.accrued, Accrued(tx, req.ts, req.amount_fen, pts)))
        if pts > 0:
            out.append(Movement(mid, st.account_id, req.ts, "accrual", pts, st.balance, req.member_id, tx,
                                f"{req.product} {req.amount_fen} fen x{policy.multiplier(req.tier)} ({req.tier})"))
    elif req.kind in ("refund", "cancel"):
        tx = req.tx_id or req.request_id
        acc = next((a for a in st.accrued if a.tx_id == tx), None)
        if acc is not None and acc.points > acc.reversed_points:
            left = acc.points - acc.reversed_points
            if req.kind == "cancel" or acc.amount_fen <= 0:
                want = left
            else:
                want = min(left, -(-acc.points * min(req.amount_fen, acc.amount_fen) // acc.amount_fen))
            lots, taken = _take(st.lots, want, prefer=tx)
            accrued = tuple(replace(a, reversed_points=a.reversed_points + want) if a.tx_id == tx else a
                            for a in st.accrued)
            st = replace(st, lots=lots, accrued=accrued)
            reason = f"{req.kind} of {tx}" + (f" ({want - taken} already spent)" if taken < want else "")
            out.append(Movement(mid, st.account_id, req.ts, "reversal", -taken, st.balance, req.member_id, tx,
                                reason))
    elif req.kind == "redemption":
        if req.points <= 0 or req.points > st.balance:
            out.append(Movement(mid, st.account_id, req.ts, "rejected", 0, st.balance, req.member_id, None,
                                f"insufficient balance: {st.balance} < {req.points}"))
        else:
            lots, taken = _take(st.lots, req.points)
            st = replace(st, lots=lots)
            out.append(Movement(mid, st.account_id, req.ts, "redemption", -taken, st.balance, req.member_id,
                                None, req.item or ""))
    else:  # pragma: no cover - Literal guards this
        raise ValueError(f"unknown request kind {req.kind!r}")
    st = replace(st, applied=mark, last_ts=now)
    return st, tuple(out)


# ---------------------------------------------------------------- serialisation (for state stores)


def state_to_dict(state: AccountState) -> dict[str, Any]:
    """JSON-ready dict of an account state."""
    return {
        "account_id": state.account_id,
        "lots": [[lot.source_id, lot.earned_at.isoformat(), lot.points] for lot in state.lots],
        "accrued": [[a.tx_id, a.ts.isoformat(), a.amount_fen, a.points, a.reversed_points] for a in state.accrued],
        "applied": [[k, t.isoformat()] for k, t in state.applied],
        "last_ts": state.last_ts.isoformat() if state.last_ts else None,
    }


def state_from_dict(d: Mapping[str, Any]) -> AccountState:
    """Inverse of :func:`state_to_dict`."""
    p = datetime.fromisoformat
    return AccountState(
        account_id=d["account_id"],
        lots=tuple(Lot(s, p(t), int(n)) for s, t, n in d["lots"]),
        accrued=tuple(Accrued(x, p(t), int(a), int(n), int(r)) for x, t, a, n, r in d["accrued"]),
        applied=tuple((k, p(t)) for k, t in d["applied"]),
        last_ts=p(d["last_ts"]) if d.get("last_ts") else None,
    )

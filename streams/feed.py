"""Turn a simulated day (docs/DATA.md frames) into the event stream a payment gateway would produce.

Per purchase: an ``Authorisation`` at ``ts``; then a ``Capture`` at ``capture_ts`` (captured/refunded), a
``Cancel`` (cancelled/timeout) a few minutes after the authorisation, and a ``Refund`` an hour after the
capture for refunded purchases. Recharges and points redemptions join at their own times. Everything is sorted
by event time and keyed as the topics require (payments by card, redemptions by member).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pandas as pd

from fuelcard.events import Authorisation, Cancel, Capture, PointsRedemption, Recharge, Refund
from streams import topics as T
from streams.loadgen import Outgoing

CANCEL_AFTER = timedelta(minutes=3)
REFUND_AFTER = timedelta(hours=1)


def _opt(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if v is pd.NaT:
        return None
    if isinstance(v, str) and v == "":
        return None
    return v


def authorisation_from_row(r: Any) -> Authorisation:
    """The authorisation of one ``transactions`` row (namedtuple from ``itertuples``)."""
    litres = _opt(getattr(r, "litres", None))
    return Authorisation(
        tx_id=str(r.tx_id), ts=pd.Timestamp(r.ts).to_pydatetime(), card_id=str(r.card_id),
        station_id=str(r.station_id), product=str(r.product), amount_fen=int(r.amount_fen),
        litres=float(litres) if litres else None, terminal_id=_opt(getattr(r, "terminal_id", None)),
        device_id=_opt(getattr(r, "device_id", None)), lat=_opt(getattr(r, "lat", None)),
        lon=_opt(getattr(r, "lon", None)), region=_opt(getattr(r, "region", None)),
    )


def day_events(transactions: pd.DataFrame, *, recharges: pd.DataFrame | None = None,
               redemptions: pd.DataFrame | None = None) -> list[tuple[pd.Timestamp, str, Any]]:
    """(event time, topic suffix, event) for every event of the frames, sorted by time."""
    out: list[tuple[pd.Timestamp, str, Any]] = []
    for r in transactions.itertuples(index=False):
        auth = authorisation_from_row(r)
        out.append((pd.Timestamp(auth.ts), T.AUTHORISATIONS.suffix, auth))
        status = str(getattr(r, "status", "captured"))
        cap_ts = _opt(getattr(r, "capture_ts", None))
        member = _opt(getattr(r, "member_id", None))
        if status in ("captured", "refunded"):
            cts = pd.Timestamp(cap_ts).to_pydatetime() if cap_ts is not None else auth.ts + timedelta(minutes=2)
            cap = Capture(tx_id=auth.tx_id, ts=cts, card_id=auth.card_id, station_id=auth.station_id,
                          product=auth.product, amount_fen=auth.amount_fen, litres=auth.litres,
                          member_id=str(member) if member else None)
            out.append((pd.Timestamp(cts), T.PAYMENTS.suffix, cap))
            if status == "refunded":
                ref = Refund(tx_id=auth.tx_id, refund_id=f"R{auth.tx_id}", ts=cts + REFUND_AFTER,
                             card_id=auth.card_id, amount_fen=auth.amount_fen)
                out.append((pd.Timestamp(ref.ts), T.PAYMENTS.suffix, ref))
        elif status in ("cancelled", "timeout"):
            c = Cancel(tx_id=auth.tx_id, ts=auth.ts + CANCEL_AFTER, card_id=auth.card_id, reason=status)
            out.append((pd.Timestamp(c.ts), T.PAYMENTS.suffix, c))
    if recharges is not None:
        for r in recharges.itertuples(index=False):
            ev = Recharge(recharge_id=str(r.recharge_id), ts=pd.Timestamp(r.ts).to_pydatetime(),
                          card_id=str(r.card_id), amount_fen=int(r.amount_fen),
                          batch_id=_opt(getattr(r, "batch_id", None)))
            out.append((pd.Timestamp(ev.ts), T.RECHARGES.suffix, ev))
    if redemptions is not None:
        for r in redemptions.itertuples(index=False):
            ev = PointsRedemption(redemption_id=str(r.redemption_id), ts=pd.Timestamp(r.ts).to_pydatetime(),
                                  member_id=str(r.member_id), points=int(r.points), item=str(r.item))
            out.append((pd.Timestamp(ev.ts), T.REDEMPTIONS.suffix, ev))
    out.sort(key=lambda x: (x[0], 0 if x[1] == T.AUTHORISATIONS.suffix else 1))
    return out


def to_records(events: list[tuple[pd.Timestamp, str, Any]], prefix: str) -> Iterator[Outgoing]:
    """Kafka records for the events (authorisations carry their tx_id for latency tracking)."""
    for _, suffix, ev in events:
        key = (ev.member_id if suffix == T.REDEMPTIONS.suffix else ev.card_id).encode()
        tx = ev.tx_id if suffix == T.AUTHORISATIONS.suffix else None
        yield Outgoing(f"{prefix}.{suffix}", key, ev.model_dump_json().encode(), tx)

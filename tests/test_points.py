"""Unit tests of the pure loyalty points core."""

from datetime import UTC, datetime, timedelta

import pytest

from fuelcard.points import (
    DEFAULT_POLICY,
    PointsPolicy,
    PointsRequest,
    account_id_for,
    apply,
    expire,
    points_for_purchase,
    state_from_dict,
    state_to_dict,
)

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)


def _accrual(tx, amount=10_000, tier="standard", product="95", ts=T0, account="member:m1", member="m1"):
    return PointsRequest(kind="accrual", request_id=tx, tx_id=tx, ts=ts, account_id=account, member_id=member,
                         tier=tier, product=product, amount_fen=amount)


@pytest.mark.parametrize(("tier", "expected"), [("standard", 100), ("silver", 120), ("gold", 150),
                                                ("diamond", 200), ("unknown", 100)])
def test_tier_multipliers(tier, expected):
    assert points_for_purchase(10_000, "92", tier) == expected


@pytest.mark.parametrize(("product", "expected"), [("92", 100), ("95", 100), ("98", 100), ("diesel", 100),
                                                   ("shop", 200), ("wash", 200), ("lottery", 0), (None, 0)])
def test_products_that_earn(product, expected):
    assert points_for_purchase(10_000, product, "standard") == expected


def test_partial_yuan_rounds_down():
    assert points_for_purchase(199, "95", "standard") == 1
    assert points_for_purchase(0, "95", "diamond") == 0


def test_accrual_visible_at_once_and_idempotent():
    s, moves = apply(None, _accrual("t1"))
    assert s.balance == 100 and len(moves) == 1 and moves[0].kind == "accrual" and moves[0].balance_after == 100
    s2, moves2 = apply(s, _accrual("t1"))
    assert s2 == s and moves2 == ()


def test_refund_reverses_pro_rata_and_is_idempotent_per_refund_id():
    s, _ = apply(None, _accrual("t1", amount=20_000))  # 200 points
    r1 = PointsRequest(kind="refund", request_id="r1", tx_id="t1", ts=T0 + timedelta(hours=1),
                       account_id="member:m1", amount_fen=5_000)
    s, m = apply(s, r1)
    assert m[0].kind == "reversal" and m[0].points == -50 and s.balance == 150
    assert apply(s, r1)[1] == ()  # redelivered refund
    r2 = PointsRequest(kind="refund", request_id="r2", tx_id="t1", ts=T0 + timedelta(hours=2),
                       account_id="member:m1", amount_fen=50_000)  # more than the rest: capped
    s, m = apply(s, r2)
    assert m[0].points == -150 and s.balance == 0


def test_cancel_reverses_everything_once():
    s, _ = apply(None, _accrual("t1"))
    s, _ = apply(s, _accrual("t2"))
    c = PointsRequest(kind="cancel", request_id="t1", tx_id="t1", ts=T0, account_id="member:m1")
    s, m = apply(s, c)
    assert m[0].points == -100 and s.balance == 100
    s, m = apply(s, PointsRequest(kind="refund", request_id="rX", tx_id="t1", ts=T0, account_id="member:m1",
                                  amount_fen=10_000))
    assert m == () and s.balance == 100  # nothing left to reverse


def test_reversal_of_unknown_tx_is_noop():
    s, m = apply(None, PointsRequest(kind="cancel", request_id="zz", tx_id="zz", ts=T0, account_id="member:m1"))
    assert s.balance == 0 and m == ()


def test_redemption_checks_balance():
    s, _ = apply(None, _accrual("t1", amount=30_000))  # 300
    red = PointsRequest(kind="redemption", request_id="d1", ts=T0, account_id="member:m1", points=500, item="mug")
    s, m = apply(s, red)
    assert m[0].kind == "rejected" and m[0].points == 0 and s.balance == 300
    ok = PointsRequest(kind="redemption", request_id="d2", ts=T0, account_id="member:m1", points=250, item="mug")
    s, m = apply(s, ok)
    assert m[0].kind == "redemption" and m[0].points == -250 and s.balance == 50
    assert apply(s, ok)[1] == ()


def test_reversal_after_spending_cannot_go_negative():
    s, _ = apply(None, _accrual("t1", amount=10_000))
    s, _ = apply(s, PointsRequest(kind="redemption", request_id="d1", ts=T0, account_id="member:m1", points=80))
    s, m = apply(s, PointsRequest(kind="cancel", request_id="t1", tx_id="t1", ts=T0, account_id="member:m1"))
    assert s.balance == 0 and m[0].points == -20 and "already spent" in m[0].reason


def test_expiry_first_in_first_out():
    policy = PointsPolicy(expiry_days=30)
    s, _ = apply(None, _accrual("old", ts=T0), policy)
    s, _ = apply(s, _accrual("new", ts=T0 + timedelta(days=20)), policy)
    s, m = apply(s, _accrual("later", ts=T0 + timedelta(days=31)), policy)
    kinds = [x.kind for x in m]
    assert kinds == ["expiry", "accrual"] and m[0].points == -100 and s.balance == 200
    s2, m2 = expire(s, T0 + timedelta(days=100), policy)
    assert s2.balance == 0 and len(m2) == 2


def test_redemption_spends_oldest_lots_first():
    policy = PointsPolicy(expiry_days=30)
    s, _ = apply(None, _accrual("a", ts=T0), policy)
    s, _ = apply(s, _accrual("b", ts=T0 + timedelta(days=10)), policy)
    s, _ = apply(s, PointsRequest(kind="redemption", request_id="d", ts=T0 + timedelta(days=11),
                                  account_id="member:m1", points=100), policy)
    s, m = expire(s, T0 + timedelta(days=31), policy)
    assert m == () and s.balance == 100  # lot "a" was spent, nothing left to expire


def test_family_pooling_shares_one_balance():
    acct = account_id_for("m1", "f1")
    assert acct == account_id_for("m2", "f1") == "family:f1"
    s, _ = apply(None, _accrual("t1", account=acct, member="m1"))
    s, _ = apply(s, _accrual("t2", account=acct, member="m2", tier="gold"))
    assert s.balance == 250
    s, m = apply(s, PointsRequest(kind="redemption", request_id="d", ts=T0, account_id=acct, member_id="m2",
                                  points=200))
    assert m[0].kind == "redemption" and s.balance == 50


def test_state_roundtrip():
    s, _ = apply(None, _accrual("t1"))
    s, _ = apply(s, PointsRequest(kind="refund", request_id="r", tx_id="t1", ts=T0, account_id="member:m1",
                                  amount_fen=1_000))
    assert state_from_dict(state_to_dict(s)) == s


def test_replay_in_any_redelivery_pattern_gives_same_balance():
    reqs = [_accrual(f"t{i}", amount=1_000 * (i + 1), ts=T0 + timedelta(minutes=i)) for i in range(10)]
    reqs.append(PointsRequest(kind="cancel", request_id="t3", tx_id="t3", ts=T0 + timedelta(hours=1),
                              account_id="member:m1"))
    once = None
    for r in reqs:
        once, _ = apply(once, r)
    twice = None
    for r in reqs + reqs[::2] + reqs:
        twice, _ = apply(twice, r)
    assert once.balance == twice.balance == sum(
        points_for_purchase(1_000 * (i + 1), "95", "standard", DEFAULT_POLICY) for i in range(10) if i != 3)

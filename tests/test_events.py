import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from fuelcard import events as ev
from fuelcard.privacy import mask_phone, sm4_decrypt, sm4_encrypt, tokenize_pan

TS = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _samples():
    return [
        ev.Authorisation(tx_id="t1", ts=TS, card_id="c1", station_id="S1", product=ev.Product.GASOLINE_95,
                         amount_fen=40000, lat=31.2, lon=121.4),
        ev.Capture(tx_id="t1", ts=TS, card_id="c1", station_id="S1", product="95", amount_fen=35012,
                   litres=42.1),
        ev.Cancel(tx_id="t2", ts=TS, card_id="c1", reason="timeout"),
        ev.Refund(tx_id="t1", refund_id="r1", ts=TS, card_id="c1", amount_fen=35012),
        ev.Recharge(recharge_id="rc1", ts=TS, card_id="c1", amount_fen=100000, batch_id="b1"),
        ev.PointsRedemption(redemption_id="p1", ts=TS, member_id="m1", points=500, item="car wash"),
    ]


@pytest.mark.parametrize("event", _samples(), ids=lambda e: e.kind)
def test_payment_events_round_trip_through_json(event):
    raw = event.model_dump_json()
    again = ev.payment_event_adapter.validate_json(raw)
    assert again == event
    assert type(again) is type(event)


def test_events_are_frozen():
    a = _samples()[0]
    with pytest.raises(ValidationError):
        a.amount_fen = 1  # type: ignore[misc]


def test_naive_timestamps_are_refused():
    with pytest.raises(ValidationError, match="timezone-aware"):
        ev.Cancel(tx_id="t", ts=datetime(2026, 1, 1), card_id="c")  # noqa: DTZ001


def test_negative_money_and_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        ev.Recharge(recharge_id="r", ts=TS, card_id="c", amount_fen=-5)
    with pytest.raises(ValidationError):
        ev.Cancel.model_validate({"tx_id": "t", "ts": TS.isoformat(), "card_id": "c", "pan": "6214..."})


def test_exported_json_schemas_match_the_models():
    exported = Path(__file__).resolve().parents[1] / "schemas"
    for name, schema in ev.json_schemas().items():
        path = exported / f"{name}.schema.json"
        assert path.exists(), f"run `make schemas`: {path.name} missing"
        assert json.loads(path.read_text()) == json.loads(json.dumps(schema)), f"{name} schema is stale"


def test_card_tokens_are_keyed_and_stable():
    a = tokenize_pan("6214830012345678", key=b"k1")
    assert a == tokenize_pan("6214830012345678", key=b"k1")
    assert a != tokenize_pan("6214830012345678", key=b"k2")
    assert "6214830012345678" not in a


def test_sm4_round_trip_and_masking():
    key = "00112233445566778899aabbccddeeff"
    enc = sm4_encrypt("13812345678", key_hex=key)
    assert "13812345678" not in enc
    assert sm4_decrypt(enc, key_hex=key) == "13812345678"
    with pytest.raises(ValueError):
        sm4_decrypt(enc, key_hex="ff" * 16)
    assert mask_phone("13812345678") == "138****5678"

"""Personal data: masked unless the scope allows, every read audited, nothing personal or secret in logs."""

from __future__ import annotations

import logging
import re

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.redact import RedactingFilter, redact
from serving.testing import make_app, shared_env


@pytest.fixture(scope="module")
def env():
    return shared_env()


@pytest.fixture(scope="module")
def client(env):
    app = make_app(env)
    with TestClient(app) as c:
        c.keys = app.state.services.demo_keys
        c.app_ = app
        yield c


def h(client, group, **extra):
    return {"X-API-Key": client.keys[group], **extra}


def test_redact_unit():
    assert redact("13812345678") == "138****5678"
    assert redact("id 11010119900307123X end") == "id 110***********123X end"
    assert redact("card 6214830012345678") == "card 621483******5678"
    assert "s3cret-value" not in redact("key=s3cret-value", ["s3cret-value"])
    assert "abcdef" not in redact("Authorization: Bearer abcdefghijkl")


def _review_case_with_member(client):
    cases = client.get("/v1/review/cases?limit=50", headers=h(client, "reviewer")).json()["items"]
    for c in cases:
        full = client.get(f"/v1/review/cases/{c['tx_id']}", headers=h(client, "reviewer")).json()
        if full.get("member_id") and full.get("contact"):
            return full
    pytest.fail("no review case with a member")


def test_contact_masked_by_default_and_revealed_only_with_scope_and_purpose(client, env):
    case = _review_case_with_member(client)
    members = pd.read_parquet(env.sim_dir / "members.parquet").set_index("member_id")
    raw_phone = str(members.loc[case["member_id"], "phone"])
    assert case["contact"]["masked"] is True
    assert case["contact"]["phone"] != raw_phone and case["contact"]["phone"][-4:] == raw_phone[-4:]
    url = f"/v1/review/cases/{case['tx_id']}?reveal=true"
    assert client.get(url, headers=h(client, "reviewer")).status_code == 400  # no purpose given
    revealed = client.get(url, headers=h(client, "reviewer", **{"X-Purpose": "verify transaction with cardholder"}))
    assert revealed.status_code == 200
    assert revealed.json()["contact"] == {"phone": raw_phone, "id_number": str(members.loc[case["member_id"],
                                                                                            "id_number"]),
                                          "masked": False}
    # marketing cannot reveal, and its exports carry masked phones only
    member = case["member_id"]
    r = client.get(f"/v1/churn/members/{member}?reveal=true", headers=h(client, "marketing", **{"X-Purpose": "x"}))
    assert r.status_code == 403
    page = client.get("/v1/churn/segments/members?limit=20", headers=h(client, "marketing")).json()["items"]
    assert page and all(re.fullmatch(r"\d{3}\*+\d{4}", i["phone"]) for i in page if i.get("phone"))


def test_every_personal_data_read_is_audited(client):
    case = _review_case_with_member(client)
    client.get(f"/v1/review/cases/{case['tx_id']}?reveal=true",
               headers=h(client, "reviewer", **{"X-Purpose": "chargeback investigation 42"}))
    client.get("/v1/churn/segments/members?limit=5", headers=h(client, "marketing"))
    trail = client.get("/v1/audit?limit=50", headers=h(client, "admin")).json()["items"]
    reveal = [e for e in trail if e["action"] == "review.case" and e["unmasked"]]
    assert reveal and reveal[0]["purpose"] == "chargeback investigation 42"
    assert reveal[0]["key_group"] == "reviewer" and case["tx_id"] in reveal[0]["subjects"]
    assert any(e["action"] == "churn.segment_members" and e["key_group"] == "marketing" for e in trail)
    assert all(e["ts"] and e["key_id"] for e in trail)
    # the trail lives in the warehouse's audit_log table
    stored = client.app_.state.services.sql.query("SELECT count() AS n FROM audit_log WHERE action = 'review.case'")
    assert stored[0]["n"] >= 1
    # and only admins may read it
    assert client.get("/v1/audit", headers=h(client, "reviewer")).status_code == 403


def test_no_personal_data_or_secrets_in_logs(client, env, caplog):
    members = pd.read_parquet(env.sim_dir / "members.parquet")
    phone, id_number = str(members["phone"].iloc[0]), str(members["id_number"].iloc[0])
    settings = env.settings
    secrets = [settings.admin_api_key.get_secret_value(), settings.api_key_salt.get_secret_value(),
               settings.sm4_key.get_secret_value(), *client.keys.values()]
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("serving").warning("lookup of %s / %s by key %s", phone, id_number, client.keys["admin"])
            logging.getLogger("uvicorn.error").error("boom with %s", phone)
            client.get(f"/v1/points/{phone}/balance", headers=h(client, "analyst"))
            client.post("/v1/risk/decide", headers=h(client, "transaction_path"),
                        json={"tx_id": "T-" + phone, "ts": "2026-01-05T08:00:00Z", "card_id": "6214830012345678",
                              "station_id": id_number, "product": "95", "amount_fen": 1})
            client.get("/v1/models", headers={"X-API-Key": settings.admin_api_key.get_secret_value() + "x"})
            case = _review_case_with_member(client)
            client.get(f"/v1/review/cases/{case['tx_id']}?reveal=true",
                       headers=h(client, "reviewer", **{"X-Purpose": "verify"}))
    finally:
        root.setLevel(old)
    text = caplog.text + "\n".join(str(r.msg) for r in caplog.records)
    assert caplog.records, "the test must capture log lines to be meaningful"
    for value in [phone, id_number, "6214830012345678", *secrets]:
        assert value not in text, f"leaked {value[:3]}…"


def test_filter_drops_exception_text():
    flt = RedactingFilter(["topsecret"])
    try:
        raise ValueError("phone 13812345678 topsecret")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed for %s", ("13812345678",), sys.exc_info())
    flt.filter(rec)
    assert rec.getMessage() == "failed for 138****5678" and rec.exc_info is None
    assert "ValueError" in rec.exc_text and "Traceback" in rec.exc_text
    assert "13812345678" not in rec.exc_text and "topsecret" not in rec.exc_text


def test_records_from_any_logger_are_redacted(client, caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("user phone 13912345678")
    assert "13912345678" not in caplog.text and "139****5678" in caplog.text

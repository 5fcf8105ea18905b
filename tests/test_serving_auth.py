"""API keys: hashed storage, scopes per user group, least privilege on every endpoint."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from fuelcard.settings import Settings
from serving.app import create_app
from serving.auth import GROUP_SCOPES, FileKeyStore, KeyRing, MemoryKeyStore, Scope, hash_key

ROUTE_SCOPES = {
    ("POST", "/v1/risk/decide"): Scope.RISK_DECIDE,
    ("GET", "/v1/points/{member_id}/balance"): Scope.POINTS_READ,
    ("GET", "/v1/points/{member_id}/history"): Scope.POINTS_READ,
    ("GET", "/v1/churn/members/{member_id}"): Scope.CHURN_READ,
    ("GET", "/v1/churn/segments"): Scope.CHURN_READ,
    ("GET", "/v1/churn/segments/members"): Scope.CHURN_READ,
    ("GET", "/v1/churn/segments/export"): Scope.SEGMENTS_EXPORT,
    ("GET", "/v1/pricing/recommendations"): Scope.PRICING_READ,
    ("GET", "/v1/demand/forecast"): Scope.DEMAND_READ,
    ("GET", "/v1/demand/replenishment"): Scope.DEMAND_READ,
    ("GET", "/v1/alerts/stock"): Scope.ALERTS_READ,
    ("GET", "/v1/sites/recommendations"): Scope.SITES_READ,
    ("GET", "/v1/sites/stations/{station_id}"): Scope.SITES_READ,
    ("GET", "/v1/review/cases"): Scope.REVIEW_READ,
    ("GET", "/v1/review/cases/{tx_id}"): Scope.REVIEW_READ,
    ("POST", "/v1/review/cases/{tx_id}/claim"): Scope.REVIEW_WRITE,
    ("POST", "/v1/review/cases/{tx_id}/resolve"): Scope.REVIEW_WRITE,
    ("GET", "/v1/models"): Scope.MODELS_READ,
    ("GET", "/v1/models/{kind}"): Scope.MODELS_READ,
    ("POST", "/v1/models/{kind}/promote"): Scope.MODELS_WRITE,
    ("POST", "/v1/models/{kind}/rollback"): Scope.MODELS_WRITE,
    ("GET", "/v1/dashboard/data"): Scope.DASHBOARD_READ,
    ("GET", "/metrics"): Scope.METRICS_READ,
    ("GET", "/v1/audit"): Scope.AUDIT_READ,
    ("POST", "/v1/keys"): Scope.KEYS_ADMIN,
}
SAMPLE = {"member_id": "M0000001", "station_id": "S0001", "tx_id": "T1", "kind": "churn"}
BODIES = {"/v1/risk/decide": {"tx_id": "T1", "ts": "2026-01-05T08:00:00Z", "card_id": "C1", "station_id": "S0001",
                              "product": "95", "amount_fen": 30000},
          "/v1/review/cases/{tx_id}/resolve": {"label": "legit"}, "/v1/models/{kind}/promote": {"version": "v1"},
          "/v1/keys": {"group": "analyst"}}
QUERY = {"/v1/demand/forecast": "?station_id=S0001"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    return create_app(Settings(data_dir=root, warehouse_url="none://", kafka_bootstrap="kafka://127.0.0.1:18198"))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def _url(path):
    url = path
    for k, v in SAMPLE.items():
        url = url.replace("{" + k + "}", v)
    return url + QUERY.get(path, "")


def test_keys_are_stored_hashed(tmp_path):
    store = FileKeyStore(tmp_path / "keys.json")
    ring = KeyRing(store, salt="pepper")
    key, principal = ring.create("marketing", name="crm")
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and hash_key(key, salt="pepper") in text
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0
    assert ring.check(key) == principal
    assert KeyRing(FileKeyStore(tmp_path / "keys.json"), salt="other").check(key) is None  # salt matters
    assert ring.revoke(principal.key_id) and ring.check(key) is None
    with pytest.raises(ValueError):
        ring.create("marketing", scopes=["pii:read"])  # a key never exceeds its group


def test_every_route_declares_exactly_the_scope_we_expect(app):
    schema_paths = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    for route in ROUTE_SCOPES:
        assert route in schema_paths, route


@pytest.mark.parametrize("group", sorted(GROUP_SCOPES))
def test_least_privilege_per_group(client, app, group):
    key = app.state.services.demo_keys[group]
    for (method, path), scope in ROUTE_SCOPES.items():
        r = client.request(method, _url(path), json=BODIES.get(path), headers={"X-API-Key": key})
        if scope in GROUP_SCOPES[group]:
            assert r.status_code != 403, (group, method, path, r.text)
        else:
            assert r.status_code == 403, (group, method, path, r.status_code)
            assert scope in r.json()["detail"]


def test_groups_are_least_privilege_by_design():
    assert GROUP_SCOPES["transaction_path"] == {Scope.RISK_DECIDE, Scope.POINTS_READ}
    assert Scope.PII_READ not in GROUP_SCOPES["marketing"] | GROUP_SCOPES["analyst"]
    assert Scope.MODELS_WRITE not in GROUP_SCOPES["analyst"]
    assert Scope.KEYS_ADMIN in GROUP_SCOPES["admin"]


def test_missing_or_wrong_key_is_401(client):
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/health").status_code == 200  # liveness needs no key


def test_admin_creates_and_revokes_keys(client, app):
    admin = {"X-API-Key": app.state.services.demo_keys["admin"]}
    r = client.post("/v1/keys", json={"group": "reviewer", "name": "night shift"}, headers=admin)
    assert r.status_code == 201
    created = r.json()
    assert client.get("/v1/review/cases", headers={"Authorization": f"Bearer {created['key']}"}).status_code != 401
    listing = client.get("/v1/keys", headers=admin).json()
    assert created["key"] not in json.dumps(listing) and "key_hash" not in json.dumps(listing)
    assert client.delete(f"/v1/keys/{created['key_id']}", headers=admin).status_code == 200
    assert client.get("/v1/review/cases", headers={"X-API-Key": created["key"]}).status_code == 401
    bad = client.post("/v1/keys", json={"group": "root"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "group"


def test_production_refuses_demo_keys(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, warehouse_url="none://"), keystore=MemoryKeyStore(),
                     with_demo_keys=False)
    assert app.state.services.demo_keys == {}
    ring = KeyRing(MemoryKeyStore(), salt="s", admin_key="bootstrap")
    assert ring.check("bootstrap").group == "admin"

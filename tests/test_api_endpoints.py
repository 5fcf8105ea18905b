"""Every endpoint through FastAPI's TestClient on a real simulated network: warehouse loaded by the warehouse
loader, decisions and points replayed through the real cores, models trained by the real jobs."""

from __future__ import annotations

import io
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from models.registry import Registry
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


def member_with_points(env):
    return str(env.warehouse.query_df(
        "SELECT member_id FROM fact_points_ledger FINAL WHERE kind = 'earn' GROUP BY member_id "
        "ORDER BY count() DESC LIMIT 1").iloc[0, 0])


def test_health_ready_and_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and body["components"]["warehouse"] == "ok"
    assert "churn" in body["components"]["models"]
    schema = client.get("/openapi.json").json()
    assert "/v1/points/{member_id}/balance" in schema["paths"]
    assert "/v1/risk/decide" in schema["paths"]


def test_points_balance_and_history(client, env):
    member = member_with_points(env)
    r = client.get(f"/v1/points/{member}/balance", headers=h(client, "transaction_path"))
    assert r.status_code == 200, r.text
    bal = r.json()
    assert bal["issued"] > 0
    assert bal["balance"] == bal["issued"] - bal["redeemed"] - bal["expired"] - bal["reversed"]
    hist = client.get(f"/v1/points/{member}/history?limit=5", headers=h(client, "marketing")).json()
    assert 0 < len(hist["items"]) <= 5
    assert {"entry_id", "ts", "kind", "points"} <= set(hist["items"][0])
    assert client.get("/v1/points/NO_SUCH_MEMBER/balance", headers=h(client, "analyst")).status_code == 404


def test_churn_score_segments_paging_and_export(client, env):
    r = client.get("/v1/churn/segments", headers=h(client, "marketing"))
    assert r.status_code == 200, r.text
    segments = r.json()["segments"]
    assert segments and all({"segment", "members", "action"} <= set(s) for s in segments)
    seg = segments[0]["segment"]
    page1 = client.get("/v1/churn/segments/members", params={"segment": seg, "limit": 3},
                       headers=h(client, "marketing")).json()
    page2 = client.get("/v1/churn/segments/members", params={"segment": seg, "limit": 3, "offset": 3},
                       headers=h(client, "marketing")).json()
    assert page1["total"] == segments[0]["members"]
    assert not {i["member_id"] for i in page1["items"]} & {i["member_id"] for i in page2["items"]}
    probs = [i["churn_probability"] for i in page1["items"] + page2["items"]]
    assert probs == sorted(probs, reverse=True)
    assert all("*" in (i.get("phone") or "*") for i in page1["items"])  # masked for marketing
    member = page1["items"][0]["member_id"]
    one = client.get(f"/v1/churn/members/{member}", headers=h(client, "analyst")).json()
    assert 0 <= one["churn_probability"] <= 1 and one["segment"] == seg and one["model_version"]
    csv = client.get("/v1/churn/segments/export", params={"segment": seg, "format": "csv"},
                     headers=h(client, "marketing"))
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    frame = pd.read_csv(io.StringIO(csv.text))
    assert len(frame) == segments[0]["members"] and {"member_id", "churn_probability", "action"} <= set(frame)
    pq = client.get("/v1/churn/segments/export", params={"format": "parquet"}, headers=h(client, "marketing"))
    assert pq.status_code == 200
    assert len(pd.read_parquet(io.BytesIO(pq.content))) == sum(s["members"] for s in segments)
    # analysts may read scores but not export member lists
    assert client.get("/v1/churn/segments/export", headers=h(client, "analyst")).status_code == 403


def test_model_outputs_sites_pricing_demand_alerts(client, env):
    sites = client.get("/v1/sites/recommendations?k=3", headers=h(client, "analyst"))
    if "sites" in env.trained:
        assert sites.status_code == 200 and len(sites.json()["items"]) == 3
        st = client.get(f"/v1/sites/stations/{env.stations[0]}", headers=h(client, "analyst"))
        assert st.status_code == 200, st.text
    else:
        assert sites.status_code == 503
    for path, kind in [("/v1/pricing/recommendations?limit=5", "pricing"),
                       (f"/v1/demand/forecast?station_id={env.stations[0]}", "demand"),
                       ("/v1/demand/replenishment", "demand")]:
        r = client.get(path, headers=h(client, "analyst"))
        if kind in env.trained:
            assert r.status_code == 200, (path, r.text)
        else:
            assert r.status_code == 503 and r.json()["detail"].startswith("model not trained"), (path, r.text)
    alerts = client.get("/v1/alerts/stock?days=60", headers=h(client, "analyst"))
    assert alerts.status_code == 200, alerts.text
    assert alerts.json()["items"], "the simulation injects leaks; the tank readings show them"
    assert all(i["source"] for i in alerts.json()["items"])


def test_review_queue_claim_resolve_stores_label(client, env):
    cases = client.get("/v1/review/cases?limit=2", headers=h(client, "reviewer")).json()
    assert cases["total"] > 0
    tx = cases["items"][0]["tx_id"]
    case = client.get(f"/v1/review/cases/{tx}", headers=h(client, "reviewer")).json()
    assert case["status"] == "open" and case["score"] >= 0
    # resolving before claiming is refused; claiming twice by someone else is refused
    assert client.post(f"/v1/review/cases/{tx}/resolve", json={"label": "fraud"},
                       headers=h(client, "reviewer")).status_code == 409
    assert client.post(f"/v1/review/cases/{tx}/claim", headers=h(client, "reviewer")).json()["status"] == "claimed"
    other = client.app_.state.keyring.create("reviewer", name="second reviewer")[0]
    assert client.post(f"/v1/review/cases/{tx}/claim", headers={"X-API-Key": other}).status_code == 409
    r = client.post(f"/v1/review/cases/{tx}/resolve", json={"label": "fraud", "note": "confirmed by phone"},
                    headers=h(client, "reviewer"))
    assert r.status_code == 200, r.text
    label = env.warehouse.query_df("SELECT is_fraud, status FROM review_labels FINAL WHERE tx_id = {t:String}",
                                   {"t": tx})
    assert label.to_dict("records") == [{"is_fraud": 1, "status": "resolved"}]
    assert client.get(f"/v1/review/cases/{tx}", headers=h(client, "reviewer")).json()["label"] == "fraud"
    bad = client.post(f"/v1/review/cases/{tx}/resolve", json={"label": "maybe"}, headers=h(client, "reviewer"))
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "label"
    assert client.get("/v1/review/cases/NOPE", headers=h(client, "reviewer")).status_code == 404


def test_registry_promote_and_rollback_picked_up_without_restart(client, env):
    reg = Registry(env.registry_dir)
    first = reg.current_version("churn")
    seg0 = client.get("/v1/churn/segments", headers=h(client, "marketing")).json()
    assert seg0["model_version"] == first
    # a second version whose scores differ: every probability halved
    src = reg.path("churn", first)

    def save(d):
        for f in src.iterdir():
            if f.is_file() and f.name != "meta.json":
                (d / f.name).write_bytes(f.read_bytes())
        seg = pd.read_csv(d / "segments.csv")
        seg["churn_probability"] = seg["churn_probability"] / 2
        seg.to_csv(d / "segments.csv", index=False)

    second = reg.register("churn", save, metrics={"note": 1}, promote=False)
    listed = client.get("/v1/models/churn", headers=h(client, "analyst")).json()
    assert {v["version"] for v in listed} >= {first, second}
    assert client.post("/v1/models/churn/promote", json={"version": second},
                       headers=h(client, "analyst")).status_code == 403
    r = client.post("/v1/models/churn/promote", json={"version": second}, headers=h(client, "admin"))
    assert r.status_code == 200 and r.json()["current"] == second
    seg1 = client.get("/v1/churn/segments", headers=h(client, "marketing")).json()
    assert seg1["model_version"] == second
    member = client.get("/v1/churn/segments/members?limit=1", headers=h(client, "marketing")).json()["items"][0]
    one = client.get(f"/v1/churn/members/{member['member_id']}", headers=h(client, "marketing")).json()
    assert one["model_version"] == second
    back = client.post("/v1/models/churn/rollback", headers=h(client, "admin"))
    assert back.status_code == 200 and back.json()["current"] == first
    assert client.get("/v1/churn/segments", headers=h(client, "marketing")).json()["model_version"] == first
    cmp = client.get(f"/v1/models/churn/compare?a={first}&b={second}", headers=h(client, "analyst"))
    assert cmp.status_code == 200 and "note" in cmp.json()["metrics"]
    assert client.post("/v1/models/churn/promote", json={"version": "nope-1"},
                       headers=h(client, "admin")).status_code == 404
    # promotion by another process (the CLI) is picked up too, within the hub's check interval
    reg.promote("churn", second, reason="cli")
    time.sleep(client.app_.state.services.hub.check_every_s + 0.05)
    assert client.get("/v1/churn/segments", headers=h(client, "marketing")).json()["model_version"] == second
    reg.promote("churn", first, reason="restore")


def test_dashboard_data_and_static(client):
    r = client.get("/v1/dashboard/data?days=30", headers=h(client, "analyst"))
    assert r.status_code == 200, r.text
    panels = r.json()["panels"]
    for name in ("sales_by_station", "sales_by_product", "sales_by_hour", "risk_daily", "risk_kpis", "points_flow",
                 "stations_map", "member_density", "churn_segments", "stock_alerts"):
        assert panels[name]["rows"], (name, panels[name])
    assert client.get("/dashboard/").status_code == 200
    assert "charts.js" in client.get("/dashboard/").text
    assert client.get("/v1/dashboard/data", headers=h(client, "transaction_path")).status_code == 403


def test_metrics_exposes_latency_decisions_and_lag(client):
    client.post("/v1/risk/decide", json={"tx_id": "TM1", "ts": "2026-01-05T08:00:00Z", "card_id": "C1",
                                         "station_id": "S0001", "product": "95", "amount_fen": 30000},
                headers=h(client, "transaction_path"))
    text = client.get("/metrics", headers=h(client, "analyst")).text
    assert "fuelcard_api_request_duration_seconds_bucket" in text
    assert 'fuelcard_api_decisions_total{' in text
    assert "fuelcard_warehouse_decisions{outcome=" in text
    assert client.get("/metrics", headers=h(client, "marketing")).status_code == 403


def test_bad_input_is_refused_cleanly(client):
    key = h(client, "transaction_path")
    big = client.post("/v1/risk/decide", content=b"{" + b" " * 100_000 + b"}",
                      headers={**key, "Content-Type": "application/json"})
    assert big.status_code == 413
    bad_json = client.post("/v1/risk/decide", content=b'{"tx_id": ', headers={**key, "Content-Type":
                                                                               "application/json"})
    assert bad_json.status_code == 422
    fields = client.post("/v1/risk/decide", json={"tx_id": "", "ts": "yesterday", "card_id": "C",
                                                  "station_id": "S", "product": "99", "amount_fen": -1},
                         headers=key)
    assert fields.status_code == 422
    got = {e["field"] for e in fields.json()["detail"]}
    assert {"tx_id", "ts", "product", "amount_fen"} <= got
    assert all("input" not in e for e in fields.json()["detail"])  # submitted values are not echoed
    assert client.get("/v1/churn/segments/members?limit=0", headers=h(client, "marketing")).status_code == 422
    assert client.get("/v1/points/bad%20id!/balance", headers=key).status_code == 422


def test_exercise_all_covers_every_endpoint(client):
    from serving.demo import CALLS, exercise_all

    summary = exercise_all(client, client.keys)
    assert summary["server_errors"] == 0, summary
    assert summary["ok"] + summary["not_ready"] == summary["endpoints"], summary["by_status"]
    import re

    def shape(path):
        return re.sub(r"\{[^}]+\}", "{}", path.split("?")[0])

    documented = {(m.upper(), shape(p)) for p, ops in client.get("/openapi.json").json()["paths"].items()
                  for m in ops}
    called = {(c.method, shape(c.path)) for c in CALLS}
    assert documented <= called, sorted(documented - called)

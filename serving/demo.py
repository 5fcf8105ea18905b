"""``exercise_all``: call every endpoint once with the key of the user group that owns it (``make demo``).

>>> from serving.demo import CALLS
>>> len({c.name for c in CALLS}) == len(CALLS)
True
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    group: str
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()


CALLS: tuple[Call, ...] = (
    Call("health", "GET", "/health", "admin"),
    Call("ready", "GET", "/ready", "admin"),
    Call("openapi", "GET", "/openapi.json", "admin"),
    Call("risk_decide", "POST", "/v1/risk/decide", "transaction_path",
         {"tx_id": "DEMO-{now}", "ts": "{ts}", "card_id": "DEMO-CARD", "station_id": "{station}", "product": "95",
          "amount_fen": 30000, "litres": 40.0}),
    Call("risk_status", "GET", "/v1/risk/status", "transaction_path"),
    Call("points_balance", "GET", "/v1/points/{member}/balance", "transaction_path"),
    Call("points_history", "GET", "/v1/points/{member}/history?limit=5", "marketing"),
    Call("churn_segments", "GET", "/v1/churn/segments", "marketing"),
    Call("churn_segment_members", "GET", "/v1/churn/segments/members?limit=5", "marketing"),
    Call("churn_member", "GET", "/v1/churn/members/{churn_member}", "marketing"),
    Call("churn_export_csv", "GET", "/v1/churn/segments/export?format=csv", "marketing"),
    Call("churn_export_parquet", "GET", "/v1/churn/segments/export?format=parquet", "marketing"),
    Call("pricing_recommendations", "GET", "/v1/pricing/recommendations?limit=5", "analyst"),
    Call("demand_forecast", "GET", "/v1/demand/forecast?station_id={station}&days=7", "analyst"),
    Call("demand_replenishment", "GET", "/v1/demand/replenishment?limit=5", "analyst"),
    Call("stock_alerts", "GET", "/v1/alerts/stock?limit=5", "analyst"),
    Call("sites_recommendations", "GET", "/v1/sites/recommendations?k=5", "analyst"),
    Call("sites_station", "GET", "/v1/sites/stations/{station}", "analyst"),
    Call("review_list", "GET", "/v1/review/cases?limit=5", "reviewer"),
    Call("review_case", "GET", "/v1/review/cases/{case}", "reviewer"),
    Call("review_case_revealed", "GET", "/v1/review/cases/{case}?reveal=true", "reviewer", None,
         (("X-Purpose", "make demo: verify the transaction with the cardholder"),)),
    Call("review_claim", "POST", "/v1/review/cases/{case}/claim", "reviewer"),
    Call("review_resolve", "POST", "/v1/review/cases/{case}/resolve", "reviewer",
         {"label": "{label}", "note": "make demo: automated walkthrough"}),
    Call("models_list", "GET", "/v1/models", "analyst"),
    Call("model_versions", "GET", "/v1/models/{kind}", "analyst"),
    Call("model_history", "GET", "/v1/models/{kind}/history", "analyst"),
    Call("model_compare", "GET", "/v1/models/{kind}/compare?a={version}&b={version}", "analyst"),
    Call("model_promote", "POST", "/v1/models/{kind}/promote", "admin",
         {"version": "{version}", "reason": "make demo: re-promote the current version"}),
    Call("model_rollback", "POST", "/v1/models/{kind}/rollback", "admin"),
    Call("dashboard_data", "GET", "/v1/dashboard/data?days=30", "analyst"),
    Call("dashboard_panel", "GET", "/v1/dashboard/panels/{panel}", "analyst"),
    Call("dashboard_page", "GET", "/dashboard/", "analyst"),
    Call("metrics", "GET", "/metrics", "analyst"),
    Call("audit", "GET", "/v1/audit?limit=10", "admin"),
    Call("keys_list", "GET", "/v1/keys", "admin"),
    Call("keys_create", "POST", "/v1/keys", "admin", {"group": "analyst", "name": "make demo"}),
    Call("keys_revoke", "DELETE", "/v1/keys/{new_key_id}", "admin"),
)


def _client(client_or_base_url: Any) -> tuple[Any, bool]:
    if isinstance(client_or_base_url, str):
        import httpx

        return httpx.Client(base_url=client_or_base_url.rstrip("/"), timeout=30), True
    return client_or_base_url, False


def _fill(value: Any, ctx: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in ctx.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    return value


def _discover(http: Any, keys: dict[str, str]) -> dict[str, str]:
    """Real ids to call with: a member with points, a scored member, a station, a review case, a model."""
    from datetime import UTC, datetime

    ctx = {"now": str(int(time.time() * 1000)), "ts": datetime.now(UTC).isoformat(), "member": "M0000001",
           "churn_member": "M0000001", "station": "S0001", "case": "T0000000001", "kind": "churn",
           "version": "none", "label": "legit", "new_key_id": "0", "panel": "risk_daily"}

    def get(path: str, group: str) -> Any:
        try:
            r = http.get(path, headers={"X-API-Key": keys[group]})
            return r.json() if r.status_code == 200 else None
        except Exception:  # noqa: BLE001 - discovery is best effort; the calls report the real status
            return None

    data = get("/v1/dashboard/data?days=30", "analyst") or {}
    stations = (data.get("panels", {}).get("stations_map") or {}).get("rows") or []
    if stations:
        ctx["station"] = str(stations[0]["station_id"])
    members = get("/v1/churn/segments/members?limit=1", "marketing")
    if members and members.get("items"):
        ctx["churn_member"] = ctx["member"] = str(members["items"][0]["member_id"])
    cases = get("/v1/review/cases?status=open&limit=1", "reviewer")
    if cases and cases.get("items"):
        case = cases["items"][0]
        ctx["case"] = str(case["tx_id"])
        ctx["label"] = "fraud" if float(case.get("score") or 0) >= 0.5 else "legit"
    models = get("/v1/models", "analyst")
    for m in (models or {}).get("models", []):
        if m.get("current"):
            ctx["kind"], ctx["version"] = str(m["kind"]), str(m["current"])
            break
    return ctx


def exercise_all(client_or_base_url: Any, keys: dict[str, str]) -> dict[str, Any]:
    """Call every endpoint once; returns ``{"calls": {name: {status, ms, group[, source]}}, "by_status": {...},
    "ok": n, "not_ready": n, "server_errors": n}`` (503 = a model or dependency not ready yet; ``source``: where
    the risk endpoint's decision came from, ``stream`` or ``fallback``, from its ``x-decision-source`` header)."""
    http, owned = _client(client_or_base_url)
    try:
        ctx = _discover(http, keys)
        calls: dict[str, dict[str, Any]] = {}
        for call in CALLS:
            path = _fill(call.path, ctx)
            headers = {"X-API-Key": keys[call.group], **dict(call.headers)}
            started = time.perf_counter()
            try:
                r = http.request(call.method, path, headers=headers, json=_fill(call.body, ctx))
                status = r.status_code
                if call.name == "keys_create" and status == 201:
                    ctx["new_key_id"] = r.json()["key_id"]
                source = r.headers.get("x-decision-source")  # risk: the stream's decision or the fallback
                if source:
                    calls[call.name] = {"source": source}
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                status = 0
                calls[call.name] = {"error": type(exc).__name__}
            calls[call.name] = {**calls.get(call.name, {}), "status": status, "group": call.group,
                                "method": call.method, "path": call.path,
                                "ms": round((time.perf_counter() - started) * 1000, 1)}
    finally:
        if owned:
            http.close()
    statuses = Counter(c["status"] for c in calls.values())
    return {"calls": calls, "by_status": {str(k): v for k, v in sorted(statuses.items())},
            "ok": sum(v for k, v in statuses.items() if 200 <= k < 300),
            "not_ready": statuses.get(503, 0),
            "server_errors": sum(v for k, v in statuses.items() if k >= 500 and k != 503),
            "endpoints": len(calls)}


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for a terminal: status counts and anything not 2xx."""
    lines = [f"API: {summary['endpoints']} endpoints exercised, {summary['ok']} ok, "
             f"{summary['not_ready']} not ready (503), {summary['server_errors']} server errors"]
    for c in summary["calls"].values():
        if c.get("source"):
            lines.append(f"  {c['method']} {c['path']} answered by "
                         + ("the stream" if c["source"] == "stream" else "the degraded fallback (stream unavailable)"))
    for name, c in summary["calls"].items():
        if not 200 <= c["status"] < 300:
            lines.append(f"  {c['status']}  {c['method']} {c['path']}  ({name}, {c['group']} key)")
    return "\n".join(lines)

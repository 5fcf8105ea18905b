"""The serving process's event loop: stall detector, model endpoints on the loop, audit writes off the request path."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest
from fastapi.testclient import TestClient

from serving.audit import JsonlAuditStore, _Buffered, audit_event
from serving.loopwatch import LoopWatch


def _blocking_call() -> None:
    time.sleep(0.15)  # a blocking call on the loop: what the detector must catch and name


def test_loopwatch_reports_a_blocked_loop_with_its_stack():
    watch = LoopWatch(20.0)

    async def main() -> None:
        watch.start()
        await asyncio.sleep(0.05)
        _blocking_call()
        await asyncio.sleep(0.05)
        await watch.stop()

    asyncio.run(main())
    summary = watch.summary()
    assert summary["stalls"] >= 1
    assert summary["max_ms"] >= 100
    assert watch.stalls and max(watch.stalls) < 400


def test_loopwatch_names_the_blocking_function(tmp_path):
    path = tmp_path / "stalls.jsonl"
    watch = LoopWatch(20.0, path=str(path))

    async def main() -> None:
        watch.start()
        await asyncio.sleep(0.05)
        _blocking_call()
        await asyncio.sleep(0.05)
        await watch.stop()

    asyncio.run(main())
    import json

    records = [json.loads(line) for line in path.read_text().splitlines()]
    worst = max(records, key=lambda r: r["stall_ms"])
    assert any("_blocking_call" in stack for stack, _ in worst["loop"])
    assert worst["blocked_ms"] + worst["on_cpu_ms"] + worst["runqueue_ms"] > 0  # schedstat read on Linux


class _SlowStore(_Buffered):
    """Records which thread writes, and writes slowly (a warehouse insert)."""

    batch = 5
    interval_s = 30.0  # only the batch wake-up or flush() writes in this test

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.writers: set[str] = set()
        super().__init__()

    def _write(self, rows):
        self.writers.add(threading.current_thread().name)
        time.sleep(0.05)
        self.rows.extend(rows)


def _event(i: int) -> dict:
    return audit_event(request_id=f"r{i}", key_id="k" * 12, group="marketing", action="churn.member",
                       subjects=[f"M{i:07d}"], fields=["churn_probability"], unmasked=False, purpose="test")


def test_audit_record_never_writes_on_the_request_path():
    store = _SlowStore()
    try:
        started = time.perf_counter()
        for i in range(12):
            store.record(_event(i))
        assert time.perf_counter() - started < 0.04  # no inline insert (each takes 50 ms)
        deadline = time.monotonic() + 5
        while len(store.rows) < 10 and time.monotonic() < deadline:  # the batch woke the writer thread
            time.sleep(0.01)
        assert len(store.rows) >= 10
        assert store.writers == {"audit-flush"}
        store.flush()
        assert sorted(r["request_id"] for r in store.rows) == sorted(f"r{i}" for i in range(12))
    finally:
        store.close()


def test_audit_back_pressure_writes_inline_when_the_writer_falls_behind():
    store = _SlowStore()
    store.max_buffer = 3
    store._stop.set()  # the writer thread is gone: only back-pressure can write
    store._wake.set()
    store._thread.join(timeout=2)
    for i in range(3):
        store.record(_event(i))
    assert len(store.rows) == 3
    assert threading.current_thread().name in store.writers


def test_jsonl_audit_read_sees_every_earlier_event(tmp_path):
    store = JsonlAuditStore(tmp_path / "audit.jsonl")
    try:
        for i in range(7):
            store.record(_event(i))
        assert len(store.recent(limit=100)) == 7
    finally:
        store.close()


# ---------------------------------------------------------------- model endpoints on the event loop (real env)


@pytest.fixture(scope="module")
def client():
    from serving.testing import make_app, shared_env

    app = make_app(shared_env())
    with TestClient(app) as c:
        c.keys = app.state.services.demo_keys
        c.app_ = app
        yield c


def test_model_endpoints_run_on_the_loop_once_loaded(client):
    services = client.app_.state.services
    hub = services.hub
    churn = hub.get("churn").obj
    threads: list[str] = []
    original = type(churn).segments  # the reloaded view is another instance of the same class

    def spy(self):
        name = threading.current_thread().name
        if not name.startswith("dashboard"):  # the dashboard's background warm-up reads segments too
            threads.append(name)
        return original(self)

    headers = {"X-API-Key": client.keys["marketing"]}
    try:
        type(churn).segments = spy
        hub.check_every_s = 0.0  # a CURRENT re-read is due on every call
        loaded = hub._loaded["churn"]
        hub._loaded["churn"] = dataclasses.replace(loaded, version="older")  # as if a new version was promoted
        first = client.get("/v1/churn/segments", headers=headers)  # re-reads CURRENT, loads: on the thread pool
        hub.check_every_s = 3600.0
        second = client.get("/v1/churn/segments", headers=headers)  # a lookup: on the event loop
    finally:
        type(churn).segments = original
        hub.check_every_s = type(hub).check_every_s
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert len(threads) == 2
    assert threads[0].startswith("AnyIO worker")
    assert threads[1] == threading.main_thread().name or not threads[1].startswith("AnyIO worker")


def test_unmasked_reads_stay_off_the_loop_and_are_audited(client):
    services = client.app_.state.services
    member = services.hub.get("churn").obj.df["member_id"].iloc[0]
    before = len(services.audit.recent(limit=10_000))
    r = client.get(f"/v1/churn/members/{member}?reveal=true",
                   headers={"X-API-Key": client.keys["admin"], "X-Purpose": "test: contact for retention"})
    assert r.status_code == 200
    r = client.get(f"/v1/churn/members/{member}", headers={"X-API-Key": client.keys["marketing"]})
    assert r.status_code == 200
    trail = services.audit.recent(limit=10_000)
    assert len(trail) == before + 2
    assert trail[0]["action"] == "churn.member" and member in trail[0]["subjects"]


def test_audit_rows_reach_the_warehouse_verbatim(client):
    services = client.app_.state.services
    purpose = 'campaign {member_id:String} "q4" {x} ü'
    services.audit.record(audit_event(request_id="rq-braces", key_id="k" * 12, group="marketing",
                                      action="churn.member", subjects=["M0000001", "M0000002"],
                                      fields=["churn_probability"], unmasked=False, purpose=purpose))
    row = next(r for r in services.audit.recent(limit=50) if r["request_id"] == "rq-braces")
    assert row["purpose"] == purpose
    assert row["subjects"] == ["M0000001", "M0000002"] and row["key_group"] == "marketing"


def test_a_promotion_elsewhere_is_loaded_in_the_background(client):
    hub = client.app_.state.services.hub
    current = hub.registry.current_version("sites")
    hub._loaded["sites"] = dataclasses.replace(hub._loaded["sites"], version="older")  # CURRENT moved on
    try:
        hub.check_every_s = 0.2
        deadline = time.monotonic() + 5
        while hub._loaded["sites"].version != current and time.monotonic() < deadline:
            time.sleep(0.05)  # no request: the model-refresh thread re-reads CURRENT and loads
    finally:
        hub.check_every_s = type(hub).check_every_s
    assert hub._loaded["sites"].version == current
    r = client.get("/v1/sites/recommendations?k=3", headers={"X-API-Key": client.keys["analyst"]})
    assert r.status_code == 200 and r.json()["model_version"] == current

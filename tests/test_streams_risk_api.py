"""Component tests of the synchronous decision endpoint (serving/risk.py) with a fake stream side."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest
from fastapi.testclient import TestClient

from fuelcard.events import Authorisation
from serving.risk import RiskService, RiskServiceConfig, create_app
from streams.core_bridge import CoreRiskEngine

AUTH = Authorisation(tx_id="t1", ts=datetime(2026, 3, 1, 2, tzinfo=UTC), card_id="c1", station_id="S1",
                     product="95", amount_fen=30_000)


def _tiny_model():
    """A real (tiny) fraud model: the stream's decisions are model decisions, not the degraded rules-only ones."""
    import lightgbm as lgb
    import numpy as np

    from models.fraud import FraudModel
    from models.fraud.compiled import trees_from_lightgbm

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 2000, (400, 1))
    booster = lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1, "seed": 1},
                        lgb.Dataset(x, (x[:, 0] > 1900).astype(float)), num_boost_round=3)
    return FraudModel("stream-test-model", ["amount"], trees_from_lightgbm(booster), review_threshold=0.99,
                      decline_threshold=0.999)


_MODEL = _tiny_model()


def load_engine() -> CoreRiskEngine:
    """The real scoring core with the tiny model."""
    return CoreRiskEngine(model=_MODEL)


class FakeStream:
    """Plays the risk agent: every produced authorisation is decided by the same engine after ``delay_s``."""

    def __init__(self, svc: RiskService, delay_s: float = 0.001) -> None:
        self.svc, self.delay_s, self.sent = svc, delay_s, []
        self.engine, self.state = load_engine(), {}

    async def send(self, topic, value, key=None):
        self.sent.append((topic, key, value))
        auth = Authorisation.model_validate_json(value)

        async def later():
            await asyncio.sleep(self.delay_s)
            st, d = self.engine.decide(self.state.get(auth.card_id), auth)
            self.state[auth.card_id] = st
            self.svc._on_decision(d.model_dump_json().encode())

        asyncio.get_running_loop().create_task(later())
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def _wire(svc: RiskService, delay_s: float) -> FakeStream:
    fake = FakeStream(svc, delay_s)
    svc._producer = fake
    svc._reader = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    return fake


async def test_decision_comes_from_the_stream_with_card_state():
    svc = RiskService(RiskServiceConfig(bootstrap="127.0.0.1:1", prefix="p", budget_ms=200),
                      engine=load_engine())
    fake = _wire(svc, 0.001)
    try:
        d1 = await svc.decide(AUTH)
        assert not d1.degraded and fake.sent[0][0] == "p.authorisations" and fake.sent[0][1] == b"c1"
        # the same card again, 1 minute later: the stream's state sees the first one
        for i in range(4):
            d = await svc.decide(AUTH.model_copy(update={"tx_id": f"t{i + 2}"}))
        assert not d.degraded and "FREQ_CAP_1H" in d.reasons  # the core's velocity rule
        again = await svc.decide(AUTH)  # a retried request gets the decision already made
        assert again == d1 and svc.counts["cached"] == 1
    finally:
        await svc.close()


async def test_slow_stream_answers_degraded_within_budget():
    svc = RiskService(RiskServiceConfig(bootstrap="127.0.0.1:1", budget_ms=30), engine=load_engine())
    _wire(svc, 0.5)
    try:
        t0 = time.perf_counter()
        d = await svc.decide(AUTH.model_copy(update={"amount_fen": 1_000_000}))
        elapsed_ms = (time.perf_counter() - t0) * 1000
        assert d.degraded and "DEGRADED_STREAM_TIMEOUT" in d.reasons and elapsed_ms < 30 + 20
        assert "DAILY_SPEND_EXTREME" in d.reasons  # rules on the authorisation alone still apply
        await asyncio.sleep(0.6)  # the stream's late decision is kept for a retry
        assert not (await svc.decide(AUTH.model_copy(update={"amount_fen": 1_000_000}))).degraded
    finally:
        await svc.close()


def test_unreachable_broker_answers_degraded_over_http():
    svc = RiskService(RiskServiceConfig(bootstrap="127.0.0.1:9", budget_ms=20), engine=load_engine())
    app = create_app(service=svc)
    with TestClient(app) as client:
        t0 = time.perf_counter()
        r = client.post("/v1/risk/decide", content=AUTH.model_dump_json(),
                        headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is True and body["tx_id"] == "t1"
        assert "DEGRADED_STREAM_UNAVAILABLE" in body["reasons"]
        assert (time.perf_counter() - t0) < 1.0
        assert client.get("/v1/risk/status").json()["connected"] is False


@pytest.mark.parametrize("payload", [b"{}", b"not json", orjson.dumps({**orjson.loads(AUTH.model_dump_json()),
                                                                        "amount_fen": -5})])
def test_invalid_authorisation_is_rejected_with_422(payload):
    svc = RiskService(RiskServiceConfig(bootstrap="127.0.0.1:9", budget_ms=20), engine=load_engine())
    with TestClient(create_app(service=svc)) as client:
        r = client.post("/v1/risk/decide", content=payload, headers={"content-type": "application/json"})
        assert r.status_code == 422


def test_fast_path_refuses_oversized_bodies_and_never_echoes_input():
    """The ASGI fast path that answers /v1/risk/decide keeps the route's contract: 413 over 64 KiB, 422 with
    field-level messages that do not echo the submitted values, other methods/routes go to FastAPI."""
    svc = RiskService(RiskServiceConfig(bootstrap="127.0.0.1:9", budget_ms=20), engine=load_engine())
    with TestClient(create_app(service=svc)) as client:
        big = client.post("/v1/risk/decide", content=b"{" + b" " * 70_000 + b"}",
                          headers={"content-type": "application/json"})
        assert big.status_code == 413
        personal = "13800138000-PERSONAL"
        bad = client.post("/v1/risk/decide", content=orjson.dumps({**orjson.loads(AUTH.model_dump_json()),
                                                                   "amount_fen": -5, "product": personal}),
                          headers={"content-type": "application/json"})
        assert bad.status_code == 422
        assert personal not in bad.text and {e["field"] for e in bad.json()["detail"]} >= {"amount_fen", "product"}
        assert client.get("/v1/risk/decide").status_code == 405  # not the fast path: FastAPI answers
        ok = client.post("/v1/risk/decide", content=AUTH.model_dump_json(),
                         headers={"content-type": "application/json"})
        assert ok.status_code == 200 and ok.headers["x-decision-source"] == "fallback"


async def test_direct_reply_after_the_budget_answers_degraded_and_a_retry_gets_the_streams_decision():
    """A slow worker: the request answers degraded within the budget; the worker's late decision is kept, so a
    retry of the same transaction gets the stream's decision (not a second, different one)."""
    engine = load_engine()

    async def slow_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            auth = Authorisation.model_validate_json(line)
            await asyncio.sleep(0.6)
            writer.write(engine.decide(None, auth)[1].model_dump_json().encode() + b"\n")

    server = await asyncio.start_server(slow_worker, "127.0.0.1", 19476)
    svc = RiskService(RiskServiceConfig(bootstrap="127.0.0.1:1", budget_ms=30, direct_ports=(19476,)),
                      engine=engine)
    try:
        t0 = time.perf_counter()
        first = orjson.loads(await svc.decide_raw(AUTH))
        assert time.perf_counter() - t0 < 0.5  # the budget, not the worker's 0.6 s
        assert first["degraded"] is True and "DEGRADED_STREAM_TIMEOUT" in first["reasons"]
        assert svc.counts["timeout"] == 1
        await asyncio.sleep(1.0)  # the worker's decision arrives
        again = orjson.loads(await svc.decide_raw(AUTH))
        assert again["tx_id"] == "t1" and not any(r.startswith("DEGRADED_STREAM_") for r in again["reasons"])
        assert svc.counts["cached"] == 1
    finally:
        await svc.close()
        server.close()

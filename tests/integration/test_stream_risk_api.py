"""Integration: the synchronous decision endpoint over the real broker and a real risk worker.

The broker is started by the test on 127.0.0.1 (ports 19471-19475) and the test FAILS if it cannot start.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fuelcard.events import Authorisation
from serving.risk import RiskService, RiskServiceConfig, create_app
from streams import topics as T
from streams.cluster import StreamCluster
from streams.loadgen import DecisionCollector, auth_records, make_producer, produce_at_rate, warm_up

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)


def _auth(tx: str, minutes: float, lat: float = 30.0, lon: float = 120.0) -> Authorisation:
    return Authorisation(tx_id=tx, ts=T0 + timedelta(minutes=minutes), card_id="CARD-API", station_id="S1",
                         product="95", amount_fen=25_000, lat=lat, lon=lon)


@pytest.mark.parametrize("path", ["kafka", "direct"])
def test_endpoint_uses_the_streams_card_state_and_degrades_when_the_broker_dies(tmp_path: Path, path: str):
    direct = (19471,) if path == "direct" else ()
    cl = StreamCluster(tmp_path, port=19472 if path == "kafka" else 19473, workers=1, agents="risk",
                       take_within_s=0.001, direct_port_base=direct[0] if direct else None)
    try:
        cl.start_broker()
        cl.start_workers()

        async def scenario() -> None:
            col = DecisionCollector(cl.bootstrap, cl.topic(T.DECISIONS.suffix))
            await col.start()
            try:
                await warm_up(cl.bootstrap, cl.topic(T.AUTHORISATIONS.suffix), col, probes=16, timeout=150)
                # S1 decided by the stream (not through the API) ...
                p = await make_producer(cl.bootstrap)
                await produce_at_rate(p, auth_records(cl.topic(T.AUTHORISATIONS.suffix), [_auth("S1", 0)]),
                                      rate=None)
                await p.stop()
                assert await col.wait_for(["S1"], 30)
            finally:
                await col.stop()
            svc = RiskService(RiskServiceConfig(bootstrap=cl.bootstrap, prefix=str(cl.prefix), budget_ms=5000,
                                                direct_ports=direct))
            app = create_app(service=svc)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://risk") as client:
                    # ... then S2, 5 minutes later and 1,000 km away, through the API: the stream's card state
                    # (holding S1) makes it impossible travel.
                    far = _auth("S2", 5, lat=39.9, lon=116.4)
                    r = await client.post("/v1/risk/decide", content=far.model_dump_json(),
                                          headers={"content-type": "application/json"})
                    assert r.status_code == 200 and r.headers["x-decision-source"] == "stream"
                    d = r.json()
                    assert d["tx_id"] == "S2" and "IMPOSSIBLE_TRAVEL" in d["reasons"], d
                    assert d["outcome"] in ("review", "decline")
                    assert svc.counts["direct" if direct else "stream"] == 1
                    again = await client.post("/v1/risk/decide", content=far.model_dump_json(),
                                              headers={"content-type": "application/json"})
                    assert again.json() == d  # a retried request: the decision already made
                    # the stream side dies: answers keep coming, rules-only, within the budget
                    cl.stop_workers()
                    assert cl.broker is not None
                    cl.broker.stop()
                    svc.config = RiskServiceConfig(bootstrap=cl.bootstrap, prefix=str(cl.prefix), budget_ms=50,
                                                   direct_ports=direct)
                    t0 = time.perf_counter()
                    r = await client.post("/v1/risk/decide", content=_auth("S3", 10).model_dump_json(),
                                          headers={"content-type": "application/json"})
                    assert r.status_code == 200 and r.headers["x-decision-source"] == "fallback"
                    assert r.json()["degraded"] is True
                    assert time.perf_counter() - t0 < 2.0

        asyncio.run(scenario())
    finally:
        cl.stop()


def test_direct_path_batches_concurrent_requests_in_card_order_and_publishes_them(tmp_path: Path):
    """Many concurrent requests through the direct path (group-committed publishes on the worker, one in flight
    at a time), in one burst and staggered over many ticks: every answer is the stream's, each decision sees the
    card's earlier ones (1,000 km in a minute is impossible travel from the second transaction on), replies on a
    connection keep request order around an immediate error, and every authorisation and decision is in Kafka."""
    direct_port = 19475
    cl = StreamCluster(tmp_path, port=19474, workers=1, agents="risk", take_within_s=0.001,
                       direct_port_base=direct_port)
    try:
        cl.start_broker()
        cl.start_workers()

        async def scenario() -> None:
            decisions = DecisionCollector(cl.bootstrap, cl.topic(T.DECISIONS.suffix))
            auths = DecisionCollector(cl.bootstrap, cl.topic(T.AUTHORISATIONS.suffix))
            await decisions.start()
            await auths.start()
            svc = RiskService(RiskServiceConfig(bootstrap=cl.bootstrap, prefix=str(cl.prefix), budget_ms=5000,
                                                direct_ports=(direct_port,)))
            try:
                await svc.start()
                deadline = time.monotonic() + 150
                while True:  # until the worker has its partitions and answers directly
                    probe = Authorisation(tx_id=f"warm{time.time_ns()}", ts=T0, card_id="CARD-WARM",
                                          station_id="S1", product="95", amount_fen=1000)
                    if b"DEGRADED_STREAM_" not in await svc.decide_raw(probe) and svc.counts["direct"]:
                        break
                    assert time.monotonic() < deadline, "the worker never answered directly"
                    await asyncio.sleep(0.5)
                before = svc.counts["direct"]
                cards = ["CARD-A", "CARD-B", "CARD-C"]
                batch = [Authorisation(tx_id=f"{c}-{k}", ts=T0 + timedelta(minutes=k), card_id=c, station_id="S1",
                                       product="95", amount_fen=25_000, lat=30.0 if k % 2 == 0 else 39.9,
                                       lon=120.0 if k % 2 == 0 else 116.4)
                         for k in range(20) for c in cards]
                answers = await asyncio.gather(*(svc.decide(a) for a in batch))  # all sent in one tick
                assert svc.counts["direct"] - before == len(batch)
                for a, d in zip(batch, answers, strict=True):
                    assert d.tx_id == a.tx_id and not any(r.startswith("DEGRADED_STREAM_") for r in d.reasons)
                    first = a.tx_id.endswith("-0")
                    assert ("IMPOSSIBLE_TRAVEL" in d.reasons) is not first, (a.tx_id, d.reasons)
                # The same again, but arriving while publishes are in flight (a new tick every millisecond):
                # requests decided during a publish join the next one, still in card order.
                staggered = [a.model_copy(update={"tx_id": "W" + a.tx_id, "card_id": "W" + a.card_id})
                             for a in batch]
                tasks = []
                for i in range(0, len(staggered), 3):
                    tasks += [asyncio.ensure_future(svc.decide(a)) for a in staggered[i:i + 3]]
                    await asyncio.sleep(0.001)
                late = await asyncio.gather(*tasks)
                assert svc.counts["direct"] - before == 2 * len(batch)
                for a, d in zip(staggered, late, strict=True):
                    assert d.tx_id == a.tx_id and not any(r.startswith("DEGRADED_STREAM_") for r in d.reasons)
                    assert ("IMPOSSIBLE_TRAVEL" in d.reasons) is not a.tx_id.endswith("-0"), (a.tx_id, d.reasons)
                batch += staggered
                ids = [a.tx_id for a in batch]
                assert await decisions.wait_for(ids, 30), "decisions missing from the decisions topic"
                assert await auths.wait_for(ids, 30), "authorisations missing from the authorisations topic"
                assert decisions.duplicates == 0

                # One raw connection: a valid line, a broken one, a valid one → three replies in that order.
                reader, writer = await asyncio.open_connection("127.0.0.1", direct_port)
                one = Authorisation(tx_id="ORD-1", ts=T0, card_id="CARD-D", station_id="S1", product="95",
                                    amount_fen=1000)
                two = one.model_copy(update={"tx_id": "ORD-2", "ts": T0 + timedelta(minutes=1)})
                writer.write(one.model_dump_json().encode() + b"\n{not json\n" + two.model_dump_json().encode()
                             + b"\n" + one.model_dump_json().encode() + b"\n")
                replies = [await asyncio.wait_for(reader.readline(), 10) for _ in range(4)]
                writer.close()
                assert b'"tx_id":"ORD-1"' in replies[0]
                assert replies[1].startswith(b'{"error"')
                assert b'"tx_id":"ORD-2"' in replies[2]
                assert replies[3].startswith(b'{"error"') and b"already decided" in replies[3]
            finally:
                await svc.close()
                await decisions.stop()
                await auths.stop()

        asyncio.run(scenario())
    finally:
        cl.stop()

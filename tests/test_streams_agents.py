"""Component tests of the Faust agents with ``agent.test_context()`` (no broker): wiring, dedupe, dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from fuelcard.events import Authorisation, Cancel, Capture, PointsRedemption, Refund
from streams.app import StreamConfig, create_app, points_request_from_json, points_request_to_json
from streams.directory import CardDirectory
from streams.engine import load_engine, load_record

T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)


def _auth(tx: str, card: str = "c1", minutes: int = 0, amount: int = 30_000, **kw) -> bytes:
    return Authorisation(tx_id=tx, ts=T0 + timedelta(minutes=minutes), card_id=card, station_id="S1",
                         product="95", amount_fen=amount, lat=30.0, lon=120.0, **kw).model_dump_json().encode()


@pytest.fixture
def built():
    directory = CardDirectory(cards={"c1": "m1", "c2": "m2"},
                              members={"m1": ("gold", "f1"), "m2": ("standard", "f1")})
    sa = create_app(StreamConfig(broker_url="kafka://127.0.0.1:1", prefix="t", app_id="test-app",
                                 engine=load_engine(), directory=directory, take_within_s=0.001))
    sent: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def publish(out):  # the outgoing sends, captured instead of produced
        sent.extend(out)
        out.clear()

    sa.publish = publish
    return sa, sent


def _to(sent, topic):
    return [orjson.loads(v) for t, _, v, _ in sent if t == topic]


async def test_risk_agent_decides_keeps_state_and_dedupes(built):
    sa, sent = built
    async with sa.agents["risk"].test_context() as agent:
        await agent.put(_auth("t1"), key=b"c1")
        await agent.put(_auth("t2", minutes=1), key=b"c1")
        await agent.put(_auth("t1"), key=b"c1")  # redelivered: no second decision
    decisions = _to(sent, "t.decisions")
    assert [d["tx_id"] for d in decisions] == ["t1", "t2"]
    assert sa.stats["duplicates"] == 1
    rec = load_record(sa.card_state.data[b"c1"], sa.config.engine)
    assert rec.recent == ("t1", "t2") and len(rec.state.ts) == 2 and rec.state.n_total == 2
    changelog = [t for t, *_ in sent if t.endswith("card_state-changelog")]
    assert len(changelog) == 2


async def test_review_decisions_go_to_review_queue(built):
    sa, sent = built
    async with sa.agents["risk"].test_context() as agent:
        for i in range(5):  # velocity: many fills within an hour → review/decline
            await agent.put(_auth(f"v{i}", card="c9", minutes=i), key=b"c9")
    decisions = _to(sent, "t.decisions")
    review = _to(sent, "t.review")
    assert review and all(d["outcome"] == "review" for d in review)
    assert {d["tx_id"] for d in review} == {d["tx_id"] for d in decisions if d["outcome"] == "review"}


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "malformed"),
    (b'{"kind": "authorisation", "tx_id": "x"}', "schema-invalid"),
    (orjson.dumps({"kind": "authorisation", "tx_id": "x", "ts": "2026-01-01T00:00:00", "card_id": "c",
                   "station_id": "s", "product": "95", "amount_fen": 1}), "schema-invalid"),  # naive timestamp
    (b"\xff\xfe", "malformed"),
])
async def test_bad_events_go_to_dead_letters_and_agent_survives(built, raw, reason):
    sa, sent = built
    async with sa.agents["risk"].test_context() as agent:
        await agent.put(raw, key=b"k")
        await agent.put(_auth("ok1"), key=b"c1")  # the agent is still alive
    dead = _to(sent, "t.dead-letters")
    assert len(dead) == 1 and dead[0]["reason"].startswith(reason)
    assert dead[0]["agent"] == "risk" and dead[0]["raw_b64"]
    assert [d["tx_id"] for d in _to(sent, "t.decisions")] == ["ok1"]


async def test_points_router_maps_payments_to_account_requests(built):
    sa, sent = built
    cap = Capture(tx_id="t1", ts=T0, card_id="c1", station_id="S1", product="95", amount_fen=10_000)
    ref = Refund(tx_id="t1", refund_id="r1", ts=T0, card_id="c1", amount_fen=5_000)
    can = Cancel(tx_id="t2", ts=T0, card_id="c2")
    red = PointsRedemption(redemption_id="d1", ts=T0, member_id="m2", points=10, item="mug")
    async with sa.agents["points_router"].test_context() as agent:
        for ev in (cap, ref, can):
            await agent.put(ev.model_dump_json().encode(), key=ev.card_id.encode())
        await agent.put(b'{"kind": "capture"}', key=b"x")
    reqs = [points_request_from_json(v) for t, _, v, _ in sent if t == "t.points-requests"]
    assert [(r.kind, r.account_id, r.tier) for r in reqs] == [
        ("accrual", "family:f1", "gold"), ("refund", "family:f1", "standard"), ("cancel", "family:f1", "standard")]
    assert len(_to(sent, "t.dead-letters")) == 1
    assert red.member_id == "m2"


async def test_points_agent_applies_idempotently_and_pools_family(built):
    sa, sent = built
    router_reqs = []
    from streams.app import payment_to_points_request

    d = sa.config.directory
    router_reqs.append(payment_to_points_request(
        Capture(tx_id="t1", ts=T0, card_id="c1", station_id="S", product="95", amount_fen=10_000), d))
    router_reqs.append(payment_to_points_request(
        Capture(tx_id="t2", ts=T0, card_id="c2", station_id="S", product="shop", amount_fen=10_000), d))
    router_reqs.append(payment_to_points_request(
        PointsRedemption(redemption_id="d1", ts=T0, member_id="m2", points=300, item="mug"), d))
    async with sa.agents["points"].test_context() as agent:
        for r in router_reqs + router_reqs:  # every request delivered twice
            await agent.put(points_request_to_json(r), key=r.account_id.encode())
    ledger = _to(sent, "t.points-ledger")
    assert [(m["kind"], m["points"]) for m in ledger] == [("accrual", 150), ("accrual", 200), ("redemption", -300)]
    assert ledger[-1]["balance_after"] == 50
    state = orjson.loads(sa.points_accounts.data[b"family:f1"])
    assert state["account_id"] == "family:f1"


def test_points_request_json_roundtrip_rejects_garbage():
    with pytest.raises(ValueError):
        points_request_from_json(b'{"kind": "steal"}')
    with pytest.raises(ValueError):
        points_request_from_json(orjson.dumps({"kind": "accrual", "request_id": "x", "ts": "2026-01-01T00:00:00",
                                               "account_id": "a"}))


async def test_envelope_of_authorisations_is_decided_item_by_item(built):
    sa, sent = built
    bad = orjson.dumps({"kind": "authorisation", "tx_id": "bad"})
    env = b"[" + b",".join([_auth("e1", card="c1"), bad, _auth("e2", card="c2")]) + b"]"
    async with sa.agents["risk"].test_context() as agent:
        await agent.put(env, key=None)
        await agent.put(b"[" + _auth("e3", card="c3") + b"]", key=None)
    envelopes = [orjson.loads(v) for t, k, v, p in sent if t == "t.decisions"]
    assert [[d["tx_id"] for d in e] for e in envelopes] == [["e1", "e2"], ["e3"]]
    dead = _to(sent, "t.dead-letters")
    assert len(dead) == 1 and orjson.loads(dead[0]["raw"])["tx_id"] == "bad"


async def test_static_shard_skips_partitions_owned_by_other_workers():
    sent = []

    async def publish(out):
        sent.extend(out)
        out.clear()

    mine = create_app(StreamConfig(broker_url="kafka://127.0.0.1:1", prefix="t", app_id="s0", shard=(0, 2),
                                   take_within_s=0.001))
    other = create_app(StreamConfig(broker_url="kafka://127.0.0.1:1", prefix="t", app_id="s1", shard=(1, 2),
                                    take_within_s=0.001))
    for sa in (mine, other):
        sa.publish = publish
        async with sa.agents["risk"].test_context() as agent:
            await agent.put(_auth("p0"), key=b"c1", partition=0)
    assert [d["tx_id"] for d in _to(sent, "t.decisions")] == ["p0"]  # decided once, by the owner


def test_workers_pace_empty_fetches_unless_direct_serving_does(monkeypatch):
    """noida-db answers empty fetches at once: every worker app gets the pacing task (default 5 ms, from
    FUELCARD_STREAM_FETCH_PACE_MS; 0 = off); a direct-serving worker paces its consumer itself (streams/direct.py)."""
    def tasks(**kw):
        sa = create_app(StreamConfig(broker_url="kafka://127.0.0.1:1", prefix="t", app_id="pace-app",
                                     engine=load_engine(), **kw))
        return [t.__name__ for t in sa.app._app_tasks]  # noqa: SLF001

    assert StreamConfig(broker_url="kafka://x").fetch_pace_s == 0.005
    assert "pace_fetches" in tasks()
    assert "pace_fetches" not in tasks(fetch_pace_s=0.0)
    assert "pace_fetches" not in tasks(direct_port=19399)
    monkeypatch.setenv("FUELCARD_STREAM_FETCH_PACE_MS", "12")
    assert StreamConfig(broker_url="kafka://x").fetch_pace_s == 0.012


def test_stream_compression_from_env(monkeypatch):
    """Producers' batch compression: none by default, FUELCARD_STREAM_COMPRESSION=gzip opts in (workers and
    load generator alike)."""
    from streams.topics import compression_from_env

    monkeypatch.delenv("FUELCARD_STREAM_COMPRESSION", raising=False)
    assert compression_from_env() is None
    assert StreamConfig(broker_url="kafka://x").compression is None
    monkeypatch.setenv("FUELCARD_STREAM_COMPRESSION", "GZIP")
    assert compression_from_env() == "gzip"
    assert StreamConfig(broker_url="kafka://x").compression == "gzip"
    monkeypatch.setenv("FUELCARD_STREAM_COMPRESSION", "none")
    assert compression_from_env() is None

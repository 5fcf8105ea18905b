"""Fast, broker-less checks of the stream fixes tracked in docs/FAULTS.md (F2 row validation, F3 far-future
authorisations, F7 null values); the end-to-end cases are in test_stream_faults.py and test_poison.py."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from fuelcard.events import Authorisation
from streams.app import StreamConfig, create_app
from streams.engine import load_engine
from streams.sinks import validate_row


def _auth(tx: str, ts: datetime) -> bytes:
    return Authorisation(tx_id=tx, ts=ts, card_id="c1", station_id="S1", product="95", amount_fen=30_000,
                         lat=30.0, lon=120.0).model_dump_json().encode()


@pytest.fixture
def built():
    sa = create_app(StreamConfig(broker_url="kafka://127.0.0.1:1", prefix="t", app_id="test-units",
                                 engine=load_engine(), take_within_s=0.001))
    sent: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def publish(out):
        sent.extend(out)
        out.clear()

    sa.publish = publish
    return sa, sent


async def test_far_future_authorisation_is_dead_lettered_and_null_value_has_empty_raw(built) -> None:
    sa, sent = built
    now = datetime.now(UTC)
    async with sa.agents["risk"].test_context() as agent:
        await agent.put(_auth("ok", now - timedelta(days=30)), key=b"c1")
        await agent.put(_auth("future", now + timedelta(days=400)), key=b"c1")
        await agent.put(None, key=b"c1")
    decided = [orjson.loads(v)["tx_id"] for t, _, v, _ in sent if t == "t.decisions"]
    dead = [orjson.loads(v) for t, _, v, _ in sent if t == "t.dead-letters"]
    assert decided == ["ok"]
    assert len(dead) == 2
    assert dead[0]["reason"].startswith("schema-invalid: ts: far-future timestamp")
    assert dead[1]["reason"] == "malformed: null value"
    assert dead[1]["raw"] == "" and base64.b64decode(dead[1]["raw_b64"]) == b""


def test_validate_row_rejects_what_the_warehouse_cannot_store() -> None:
    ts = "2026-01-01T06:00:00+00:00"
    validate_row("points-ledger", {"movement_id": "m1", "ts": ts, "kind": "accrual", "points": 5})
    validate_row("payments", {"kind": "capture", "tx_id": "t1", "ts": ts, "card_id": "c1", "station_id": "S1",
                              "product": "95", "amount_fen": 100})
    with pytest.raises(ValueError):
        validate_row("decisions", {"ts": ts, "outcome": "approve"})  # no tx_id
    with pytest.raises(ValueError):
        validate_row("points-ledger", {"movement_id": "m1", "ts": "2999-01-01T00:00:00+00:00", "kind": "accrual",
                                       "points": 5})
    with pytest.raises(ValueError):
        validate_row("authorisations", {"tx_id": "t1"})
    with pytest.raises(ValueError):
        validate_row("authorisations", orjson.loads(_auth("t2", datetime.now(UTC) + timedelta(days=3))),
                     max_future_skew_s=86_400)


def test_worker_cli_sets_the_far_future_skew() -> None:
    """``python -m streams.worker --max-future-skew S`` reaches StreamConfig.max_future_skew_s (0 disables it)."""
    from streams.app import StreamConfig
    from streams.worker import future_skew, parser

    assert parser().parse_args([]).max_future_skew == StreamConfig(broker_url="x").max_future_skew_s == 86_400
    args = parser().parse_args(["--max-future-skew", "3600", "--sink-batch", "500", "--sink-within", "0.5",
                                "--diag-interval", "5"])
    assert future_skew(args.max_future_skew) == 3600.0
    assert (args.sink_batch, args.sink_within, args.diag_interval) == (500, 0.5, 5.0)
    assert future_skew(parser().parse_args(["--max-future-skew", "0"]).max_future_skew) is None


async def test_publish_delivers_effects_before_the_changelog_that_marks_them_seen() -> None:
    """A batch interrupted between its effects and its table changelog must not leave a state that says "seen" for
    a decision that is not in Kafka (the replay would take it for a duplicate and never decide it): ``publish``
    submits the changelog only once every effect was delivered."""
    import asyncio

    sa = create_app(StreamConfig(broker_url="kafka://127.0.0.1:1", prefix="t", app_id="test-order",
                                 engine=load_engine()))
    log: list[str] = []
    pending: list[asyncio.Future[None]] = []

    class Batch:
        def __init__(self) -> None:
            self.n = 0

        def append(self, **_: object) -> object:
            self.n += 1
            return object()

    class Producer:
        def create_batch(self) -> Batch:
            return Batch()

        async def send(self, topic: str, value: bytes, key: bytes | None = None,
                       partition: int | None = None) -> asyncio.Future[None]:
            return self._submitted(topic)

        async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
            return self._submitted(topic)

        def _submitted(self, topic: str) -> asyncio.Future[None]:
            # every earlier submission must be delivered before a changelog record is even submitted
            if topic.endswith("-changelog"):
                assert all(f.done() for f in pending), log
            log.append(topic)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.01, fut.set_result, None)
            if not topic.endswith("-changelog"):
                pending.append(fut)
            return fut

    sa.app.producer._ensure_producer = lambda: Producer()  # noqa: SLF001
    out = [("test-order-card_state-changelog", b"c1", b"s", 3), ("t.decisions", b"c1", b"d", None),
           ("t.decisions", None, b"[d]", 3), ("test-order-card_state-changelog", b"c2", b"s", 1),
           ("t.points-ledger", b"a", b"l", None)]
    await sa.publish(out)
    assert out == []
    assert sorted(t for t in log if not t.endswith("-changelog")) == ["t.decisions", "t.decisions", "t.points-ledger"]
    assert log[-2:] == ["test-order-card_state-changelog"] * 2
    assert all(f.done() for f in pending)

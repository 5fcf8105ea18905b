"""Unit tests of the direct-decision server's helpers (streams/direct.py): envelopes and fetch pacing."""

from __future__ import annotations

import asyncio

import orjson

from streams.direct import ENVELOPE_MAX_BYTES, envelopes, pace_empty_fetches


def test_envelopes_keep_every_item_in_order_and_stay_under_the_size_limit():
    items = [orjson.dumps({"tx_id": f"t{i}", "pad": "x" * (i % 700)}) for i in range(2_000)]
    envs = envelopes(items)
    assert len(envs) > 1
    assert all(len(e) <= ENVELOPE_MAX_BYTES for e in envs)
    assert [d["tx_id"] for e in envs for d in orjson.loads(e)] == [f"t{i}" for i in range(2_000)]
    assert envelopes([b'{"a":1}']) == [b'[{"a":1}]']
    big = b'"' + b"y" * (ENVELOPE_MAX_BYTES + 10) + b'"'
    assert [orjson.loads(e) for e in envelopes([b"1", big, b"2"])] == [[1], [orjson.loads(big)], [2]]


class _Fetcher:
    def __init__(self) -> None:
        self._records: dict[str, object] = {}
        self.calls = 0

    async def _proc_fetch_request(self, assignment: object, node_id: object, request: object) -> str:
        self.calls += 1
        return "fetched"


class _Consumer:
    def __init__(self) -> None:
        self._fetcher = _Fetcher()


def test_paced_fetches_wait_between_fetches_and_a_cancelled_pause_still_returns_the_fetch():
    async def scenario() -> None:
        c = _Consumer()
        assert pace_empty_fetches(c, 0.05, all_fetches=True)
        assert not pace_empty_fetches(c, 0.05)  # installed once
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await c._fetcher._proc_fetch_request(None, 0, None) == "fetched"
        assert loop.time() - t0 >= 0.045  # an empty fetch is followed by the pause
        # aiokafka's Fetcher.close() cancels its fetch tasks and awaits them expecting no exception
        task = asyncio.ensure_future(c._fetcher._proc_fetch_request(None, 0, None))
        await asyncio.sleep(0.01)
        task.cancel()
        assert await task == "fetched"

    asyncio.run(scenario())


def test_murmur2_and_partition_match_aiokafka():
    import random

    from aiokafka.partitioner import DefaultPartitioner
    from aiokafka.partitioner import murmur2 as reference

    from streams.direct import kafka_partition, murmur2

    rng = random.Random(7)
    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"c40822", "卡-001".encode()]
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(3_000)]
    parts = list(range(8))
    for k in keys:
        assert murmur2(k) == reference(k), k
        assert kafka_partition(k, 8) == DefaultPartitioner()(k, parts, parts), k

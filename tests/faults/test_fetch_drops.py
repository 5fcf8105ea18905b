"""F11 (docs/FAULTS.md): faust-streaming 0.15.3's fetcher drops records aiokafka already handed out.

``Consumer.getmany`` drops every fetched record whose partition is not in the consumer's live set of active
partitions at that moment — after aiokafka advanced its position past it, so it is never fetched again (the
partition "holds fetched records without handing them to the agent" until the watchdog restarts the worker).
At the end of a table recovery the stream partitions are paused exactly while such a fetch can return.
``streams.worker.patch_faust_fetch_drops`` seeks such a partition back to the first dropped record and hands
out none of its later records in the same batch. Broker-less: the patched method runs on a stand-in for the
consumer; the same scenario through Faust's own method loses the record (``test_unpatched_faust_loses_it``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust.transport.consumer as fc
from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from streams.worker import patch_faust_fetch_drops

A, B = TP("t.authorisations", 0), TP("t.authorisations", 1)


@dataclass
class _Record:
    offset: int


class _Thread:
    def __init__(self) -> None:
        self.seeks: list[tuple[TP, int]] = []

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


class _Monitor:
    def track_tp_end_offset(self, tp: TP, offset: Any) -> None:
        pass


class _App:
    consumer_generation_id = 7
    monitor = _Monitor()


class _Log:
    def dev(self, *a: Any) -> None:
        pass

    warning = dev


class StandInConsumer:
    """What ``Consumer.getmany`` reads: one fetch of B (paused) and A (active); B is resumed mid-batch, as
    the recovery's ``resume_partitions`` does while the fetcher iterates."""

    def __init__(self) -> None:
        self.active = {A}
        self._buffered_partitions: set[TP] = set()
        self._thread = _Thread()
        self.app = _App()
        self.scheduler = DefaultSchedulingStrategy()
        self.flow_active = True
        self.should_stop = False
        self.log = _Log()

    async def _wait_next_records(self, timeout: float) -> Any:
        return {B: [_Record(10), _Record(11), _Record(12)], A: [_Record(5), _Record(6), _Record(7)]}, self.active

    def _to_message(self, tp: TP, record: _Record) -> tuple[TP, int]:
        return tp, record.offset

    def highwater(self, tp: TP) -> int:
        return 100


async def _handed_out(getmany: Any) -> tuple[list[tuple[TP, int]], StandInConsumer]:
    c = StandInConsumer()
    out = []
    async for _tp, msg in getmany(c, 1.0):
        out.append(msg)
        c.active.add(B)  # the stream partition is resumed while the batch is being handed out
    return out, c


async def test_a_paused_partitions_fetched_records_are_fetched_again_not_dropped() -> None:
    patch_faust_fetch_drops()
    handed, c = await _handed_out(fc.Consumer.getmany)
    assert [o for tp, o in handed if tp == A] == [5, 6, 7]
    # B's first record arrived while B was paused: none of B's records is handed out of order, and B is
    # sought back to it, so aiokafka fetches 10, 11, 12 again once B is active
    assert [o for tp, o in handed if tp == B] == []
    assert c._thread.seeks == [(B, 10)]  # noqa: SLF001


async def test_unpatched_faust_loses_it() -> None:
    """The same fetch through faust-streaming's own getmany: record 10 is dropped with no seek (lost until a
    restart), and 11 is handed out after the gap — what the patch replaces."""
    original = getattr(fc.Consumer, "_fuelcard_original_getmany", fc.Consumer.getmany)
    handed, c = await _handed_out(original)
    assert [o for tp, o in handed if tp == B] == [11, 12]
    assert c._thread.seeks == []  # noqa: SLF001

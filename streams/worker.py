"""Run one Faust worker process: ``python -m streams.worker [options]`` or ``fuelcard stream worker``.

Stops gracefully on SIGTERM/SIGINT (it leaves its consumer group, which matters on noida-db: a member that
dies without leaving is never evicted).

Diagnostics (for the supervisor's watchdog, ``streams.cluster``): ``SIGUSR1`` logs :func:`partition_report` — per
source partition where its records stand between the broker and the agent (fetched position, offset last handed
to the agent, in flight, acked, committed, pause states, a verdict) — and where every asyncio task and async
generator is suspended (the agents' ``take_events`` generators included, which mode's own SIGUSR1 task dump
truncates); ``--diag-interval S`` logs the partition report every S seconds at WARNING.

Patches of faust-streaming 0.15.3 applied by every worker (docs/FAULTS.md F9, F11): :func:`patch_faust_recovery`,
:func:`patch_faust_commit_safety`, :func:`patch_faust_fetch_drops`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

from streams.app import StreamConfig, create_app
from streams.directory import CardDirectory
from streams.engine import load_engine
from streams.sinks import make_sink


def credentials_from_settings(settings):  # type: ignore[no-untyped-def]
    """Faust broker credentials for SASL/TLS production clusters (None for PLAINTEXT)."""
    import faust

    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ssl_context = None
    if proto in ("SSL", "SASL_SSL"):
        import ssl

        ssl_context = ssl.create_default_context()
    if proto.startswith("SASL"):
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=pw,
                                     mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


def build_config(args: argparse.Namespace) -> StreamConfig:
    """StreamConfig from parsed worker arguments and the environment's Settings."""
    from fuelcard.settings import load_settings

    settings = load_settings()
    return StreamConfig(
        broker_url=args.broker or settings.kafka_bootstrap,
        prefix=args.prefix,
        app_id=args.app_id,
        engine=load_engine(artifacts_dir=args.artifacts or getattr(settings, "registry_dir", settings.artifacts_dir)),
        directory=CardDirectory.from_dir(args.directory),
        sink=make_sink(args.sink),
        agents=frozenset(a.strip() for a in args.agents.split(",") if a.strip()),
        take_max=args.take_max,
        take_within_s=args.take_within,
        broker_credentials=credentials_from_settings(settings),
        trace=os.environ.get("FUELCARD_STREAM_TRACE") == "1",  # entry point: may read the environment
        shard=_shard(args.shard),
        direct_port=args.direct_port,
        max_future_skew_s=future_skew(args.max_future_skew),
    )


def future_skew(seconds: float) -> float | None:
    """``--max-future-skew`` → ``StreamConfig.max_future_skew_s`` (0 or less: no far-future check)."""
    return None if seconds <= 0 else float(seconds)


def _shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/N"`` → (i, N)."""
    if not spec:
        return None
    i, n = (int(x) for x in spec.split("/"))
    if not 0 <= i < n:
        raise ValueError(f"bad --shard {spec!r}")
    return i, n


def parser() -> argparse.ArgumentParser:
    """Command-line options of a worker process."""
    p = argparse.ArgumentParser(prog="streams.worker")
    p.add_argument("--broker", default=None, help="faust broker URL (default FUELCARD_KAFKA_BOOTSTRAP)")
    p.add_argument("--prefix", default="fuelcard")
    p.add_argument("--app-id", default="fuelcard-stream")
    p.add_argument("--agents", default="risk,points,sink")
    p.add_argument("--directory", default=None, help="simulator output dir with cards/members parquet")
    p.add_argument("--sink", default="null", help="null | jsonl:DIR[::tag] | warehouse:URL")
    p.add_argument("--artifacts", default=None, help="model registry root (default: the settings' registry_dir)")
    p.add_argument("--take-max", type=int, default=256)
    p.add_argument("--take-within", type=float, default=0.004)
    p.add_argument("--loglevel", default="WARNING")
    p.add_argument("--loop", choices=("uvloop", "aio"), default="uvloop")
    p.add_argument("--direct-port", type=int, default=None,
                   help="serve direct decisions for the risk API on 127.0.0.1:PORT")
    p.add_argument("--shard", default=None, help="i/N: static ownership of authorisation partitions p%%N == i")
    p.add_argument("--max-future-skew", type=float, default=24 * 3600.0, metavar="SECONDS",
                   help="dead-letter authorisations dated more than this ahead of processing time (0 = no check)")
    p.add_argument("--sink-batch", type=int, default=None, help="sink micro-batch size (default StreamConfig's)")
    p.add_argument("--sink-within", type=float, default=None, help="sink micro-batch window in seconds")
    p.add_argument("--diag-interval", type=float, default=0.0, metavar="SECONDS",
                   help="log assignment, paused partitions, fetch positions and highwaters every S seconds (0 = off)")
    return p


def patch_faust_recovery() -> None:
    """Close a record-skipping race in faust-streaming 0.15.3's ``Recovery.on_recovery_completed``.

    When a worker starts (or rebalances) with table changelog records to restore, Faust resumes the consumer's
    flow and starts its fetcher *during* recovery; at the end it resumes the stream partitions, then awaits
    ``perform_seek()`` (seek to the committed offsets), then calls ``flow_control.resume()``, which clears every
    stream queue. Records fetched in that window (they arrive while the worker starts, e.g. authorisations sent
    right after a restart) are delivered into a queue and bump the partition's read offset; the clear throws
    them away and the re-fetch after the seek drops them as already read (Faust's ``DROPPED MESSAGE ROFF``). The
    next record of the partition is processed and acknowledged, so the committed offset passes a record that was
    never processed: its decision is silently missing (the intermittent "1 of 16 warm-up probes never decided"
    after ``kill -9`` + broker restart). Fixed order: clear the queues first, then seek every stream partition to
    its committed offset — also 0, which aiokafka's ``seek_to_committed`` skips — so anything thrown away is
    fetched again, then resume. What still slips through is caught by :func:`patch_faust_commit_safety`.
    """
    import faust.tables.recovery as rec

    if getattr(rec.Recovery, "_fuelcard_patched", False):
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        coros = [asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                                   self.standbys_for_table[table]))
                 for table in self.tables.values()]
        if coros:
            await asyncio.wait(coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
                             f"param {generation_id}")
            return
        stream_tps = {tp for tp in assignment if not self._is_changelog_tp(tp)}
        # Clear the stream queues first (records delivered before this point are thrown away here), then seek
        # every stream partition back to its committed offset, so whatever was thrown away is fetched again.
        self.app.flow_control.resume()
        if assignment:
            self.log.info("Seek stream partitions to committed offsets (after the queue clear; fuelcard patch).")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            if _HEADS_COMMITTED:
                # aiokafka's seek_to_committed skips a committed offset of 0 (and Faust stores it as None)
                for tp in stream_tps:
                    if consumer._committed_offset.get(tp) is None:  # noqa: SLF001
                        await consumer.seek(tp, 0)
        self.completed.set()
        consumer.resume_flow()
        consumer.resume_partitions(stream_tps)
        await self.app._fetcher.maybe_start()  # noqa: SLF001
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    rec.Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    rec.Recovery._fuelcard_patched = True  # type: ignore[attr-defined]  # noqa: SLF001


def patch_faust_commit_safety() -> None:
    """Never let faust-streaming 0.15.3 commit past a record that no agent processed.

    Two places in ``faust.transport.consumer.Consumer`` turn a record that was fetched but never delivered (the
    recovery race above, a stream queue cleared by flow control) into a committed offset beyond it — a silent loss:

    * ``_add_gap``: when the next delivered record's offset jumps ahead of the partition's read offset, the offsets
      in between are taken for a "gap" (compaction, transaction markers) and counted as acknowledged. Our source
      topics are neither compacted nor transactional, so their offsets are contiguous: a jump means records were
      dropped, and they must hold the commit back.
    * ``_new_offset`` compares the lowest acknowledged offset with the committed offset as if the committed offset
      were the last *processed* record (``min(acked) - committed > 1``); Kafka's committed offset is the next
      record to read, so one unprocessed record at the head was committed past.

    With both fixed, a dropped record stops the partition's commits; the supervisor's progress watchdog
    (``streams.cluster``) sees committed < end without progress and restarts the worker, which re-reads from the
    committed offset: at-least-once delivery holds, and effects are idempotent.
    """
    import faust.transport.consumer as fc

    if getattr(fc.Consumer, "_fuelcard_commit_safe", False):
        return

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        logging.getLogger("streams.worker.diag").warning(
            "diag: offsets %d..%d of %s[%d] were skipped by the fetch (not delivered): commits hold before them",
            offset_from, offset_to - 1, tp.topic, tp.partition)

    original_new_offset = fc.Consumer._new_offset  # noqa: SLF001

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        # Faust stores a committed offset of 0 as None; the worker commits every never-committed partition's
        # beginning before it starts (commit_unset_offsets), so None here means 0.
        committed = self._committed_offset.get(tp)
        if committed is None and _HEADS_COMMITTED:
            committed = 0
        if acked and committed is not None and min(acked) > committed:
            return None  # the record at the committed offset has not been processed yet
        return original_new_offset(self, tp)

    fc.Consumer._add_gap = _add_gap  # type: ignore[method-assign]  # noqa: SLF001
    fc.Consumer._new_offset = _new_offset  # type: ignore[method-assign]  # noqa: SLF001
    fc.Consumer._fuelcard_commit_safe = True  # type: ignore[attr-defined]  # noqa: SLF001


def patch_faust_fetch_drops() -> None:
    """Never let faust-streaming 0.15.3's fetcher drop records aiokafka already handed out (the F11 stall).

    ``Consumer.getmany`` asks aiokafka for the records of the consumer's *live* set of active partitions and
    then drops, silently, every returned record whose partition is no longer in that set. aiokafka has already
    advanced its position past them, so they are never fetched again: the partition holds fetched records that
    no agent ever receives, its commits stop (``patch_faust_commit_safety``) and only the supervisor's watchdog
    restart got it going again. It happens at the end of every table recovery: ``Done reading from changelog
    topics`` pauses the changelog partitions — the live set is then *empty*, which aiokafka's
    ``fetched_records(partitions)`` reads as "every partition" — and the stream partitions are resumed only
    after the seek to the committed offsets; a fetch waiting in between returns the stream partitions' records
    fetched from the committed offsets and Faust throws them away (seen after ``kill -9`` + broker restart: 5 of
    8 authorisation partitions with ``pos`` = end, ``read`` = committed, nothing in flight).

    Fix: when a record of a partition that is not active (paused) is dropped, seek the partition back to it
    (aiokafka then discards its prefetched records and fetches them again once the partition is resumed), and
    drop every later record of that partition in the same batch, so nothing is handed out of order. Records
    left behind because the flow stopped or the generation changed (a rebalance) are not touched: the recovery
    that follows seeks every partition to its committed offset. Each seek-back is logged at INFO (it happens
    at every recovery: records of the stream partitions arrive while they are still paused).
    """
    import faust.transport.consumer as fc

    if getattr(fc.Consumer, "_fuelcard_fetch_safe", False):
        return
    diag = logging.getLogger("streams.worker.diag")

    async def getmany(self: Any, timeout: float) -> Any:
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        records_it = self.scheduler.iterate(records)
        to_message = self._to_message
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:  # noqa: BLE001 - as Faust does
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return
        dropped: dict[Any, int] = {}  # partition -> first record not handed out (sought back to)
        for tp, record in records_it:
            if not self.flow_active:
                break
            if self.app.consumer_generation_id != generation_id:
                break
            if tp in dropped:
                continue  # after a dropped record: never hand out a later one (the seek re-fetches them all)
            if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)
                continue
            dropped[tp] = record.offset
            try:
                self._thread.seek(tp, record.offset)
                how = "sought back"
            except Exception as exc:  # noqa: BLE001 - e.g. no longer assigned: its next owner starts at the commit
                how = f"seek failed: {exc!r}"
            diag.info("diag: fetched records of %s[%d] from offset %d arrived while the partition was paused "
                         "(not active); %s to offset %d so they are fetched again", tp.topic, tp.partition,
                         record.offset, how, record.offset)

    fc.Consumer._fuelcard_original_getmany = fc.Consumer.getmany  # type: ignore[attr-defined]  # noqa: SLF001
    fc.Consumer.getmany = getmany  # type: ignore[method-assign]
    fc.Consumer._fuelcard_fetch_safe = True  # type: ignore[attr-defined]  # noqa: SLF001


_HEADS_COMMITTED = False  # set when commit_unset_offsets succeeded: a partition Faust has no offset for is at 0


async def commit_unset_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Give every partition of ``topics`` that ``group`` never committed a committed offset: its beginning.

    Same meaning as ``auto_offset_reset="earliest"``, but it lets :func:`patch_faust_commit_safety` check the
    head of every partition: a record dropped before the group's first commit could otherwise be committed past
    (Faust trusts the first acknowledged offset when nothing is committed). Returns what was committed.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import OffsetAndMetadata

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        done = {(tp.topic, tp.partition) for tp in await admin.list_consumer_group_offsets(group)}
        tps = [TopicPartition(t, q) for t in topics for q in sorted(consumer.partitions_for_topic(t) or ())
               if (t, q) not in done]
        if not tps:
            return {}
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(begin[tp], "") for tp in tps})
        return {f"{tp.topic}[{tp.partition}]": begin[tp] for tp in tps}
    finally:
        await consumer.stop()
        await admin.close()


def _suspension_chain(obj: Any, limit: int = 40) -> list[str]:
    """Where a coroutine / async generator is suspended, outermost first (follows cr_await / ag_await)."""
    out: list[str] = []
    for _ in range(limit):
        if obj is None:
            break
        frame = getattr(obj, "ag_frame", None) or getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_filename.rsplit('site-packages/', 1)[-1]}:{frame.f_lineno} "
                       f"{frame.f_code.co_name}")
        nxt = getattr(obj, "ag_await", None) or getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        if nxt is None and frame is None:
            out.append(repr(obj)[:160])
        obj = nxt
    return out


def dump_async_state(logger: logging.Logger) -> None:
    """Log where every task and every live async generator is suspended (for stalled-worker diagnosis)."""
    lines = []
    with_loop = None
    try:
        with_loop = asyncio.get_event_loop()
    except RuntimeError:
        pass
    if with_loop is not None:
        for t in asyncio.all_tasks(with_loop):
            chain = _suspension_chain(t.get_coro())
            if any("streams/" in c or "faust/" in c for c in chain):
                lines.append("task " + " -> ".join(chain))
    for obj in gc.get_objects():
        if isinstance(obj, types.AsyncGeneratorType) and obj.ag_frame is not None:
            lines.append("agen " + " -> ".join(_suspension_chain(obj)))
    logger.warning("diag: async state (%d entries)\n%s", len(lines), "\n".join(lines))


def _tp_str(tp: Any) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _safe(fn: Any, default: Any = "?") -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - diagnostics must never hurt the worker
        return default


def partition_report(sa: Any) -> list[str]:
    """One line per assigned source partition: where each record stands between the broker and the agent.

    A record goes broker → aiokafka's prefetch buffer (``prefetched``: records fetched but not handed out; the
    aiokafka ``pos`` is the next offset it will hand out) → Faust's fetcher loop (``read``: last offset handed to
    the conductor; dropped there when the partition is not in Faust's ``active`` set, or when flow is stopped)
    → the agent's channel queue (``queue``, shared by the topic's partitions) → the agent's ``take_events``
    buffer and body (``unacked``: delivered and not yet acknowledged, lowest offset) → ``acked`` offsets → the
    ``committed`` offset. Faust-level pause states: ``active`` (fetched), ``paused`` (rebalance/recovery),
    ``buffered`` (queue under pressure: not fetched until the queue drains), aiokafka ``PAUSED``.
    ``verdict`` names the gap when records are waiting: e.g. ``fetched-not-delivered`` = aiokafka's position is
    past the last offset handed to the agent and nothing of it is in flight (records dropped between fetch
    and agent), ``not-fetching`` = records waiting on the broker but the partition is not being fetched.
    """
    app = sa.app
    consumer = app.consumer
    assigned = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
    sources = [tp for tp in assigned if "-changelog" not in tp.topic]
    ak = consumer._thread._ensure_consumer()  # noqa: SLF001 - diagnostics of Faust's aiokafka consumer
    paused_ak = _safe(lambda: {(tp.topic, tp.partition) for tp in ak.paused()}, set())
    state = _safe(lambda: ak._subscription.subscription.assignment, None)  # noqa: SLF001
    prefetched = _safe(lambda: ak._fetcher._records, {})  # noqa: SLF001
    active = _safe(lambda: set(consumer._active_partitions or ()), set())  # noqa: SLF001
    paused = _safe(lambda: set(consumer._paused_partitions), set())  # noqa: SLF001
    buffered = _safe(lambda: set(consumer._buffered_partitions), set())  # noqa: SLF001
    unacked: dict[Any, list[int]] = {}
    for m in _safe(lambda: list(consumer._unacked_messages), []):  # noqa: SLF001
        unacked.setdefault(m.tp, []).append(m.offset)
    lines = []
    for tp in sources:
        st = _safe(lambda tp=tp: state.state_value(tp), None) if state is not None else None
        pos = st.position if st is not None and st.has_valid_position else None
        fr = next((v for k, v in prefetched.items() if (k.topic, k.partition) == (tp.topic, tp.partition)), None)
        pre = _safe(lambda fr=fr: fr._partition_records.next_fetch_offset, None) if fr is not None else None  # noqa: SLF001
        hw = _safe(lambda tp=tp: consumer.highwater(tp), None)
        read = consumer._read_offset.get(tp)  # noqa: SLF001
        committed = consumer._committed_offset.get(tp)  # noqa: SLF001
        acked = list(consumer._acked.get(tp) or ())  # noqa: SLF001
        ua = sorted(unacked.get(tp, ()))
        flags = [name for name, on in (("active", tp in active), ("paused", tp in paused),
                                       ("buffered", tp in buffered),
                                       ("PAUSED", (tp.topic, tp.partition) in paused_ak)) if on]
        verdict = "idle"
        waiting = isinstance(hw, int) and hw > (committed or 0)
        if waiting:
            delivered_to = (read + 1) if read is not None else (committed or 0)
            if ua or acked:
                verdict = "in-agent"
            elif isinstance(pos, int) and pos > delivered_to:
                verdict = "fetched-not-delivered"
            elif tp not in active and tp not in buffered:
                verdict = "not-fetching(inactive)"
            elif (tp.topic, tp.partition) in paused_ak:
                verdict = "not-fetching(aiokafka-paused)"
            else:
                verdict = "waiting-for-fetch"
        lines.append(f"{_tp_str(tp)} hw={hw} pos={pos} prefetched_to={pre} read={read} "
                     f"unacked={len(ua)}{'@' + str(ua[0]) if ua else ''} "
                     f"acked={len(acked)}{'@' + str(min(acked)) if acked else ''} committed={committed} "
                     f"[{','.join(flags)}] {verdict}")
    queues = []
    for chan in _safe(lambda: list(app.topics._topics), []):  # noqa: SLF001
        q = getattr(chan, "_queue", None)
        names = ",".join(getattr(chan, "topics", None) or ())
        if q is not None and "-changelog" not in names:
            queues.append(f"{names} qsize={q.qsize()} "
                          f"pressure_pending={len(getattr(q, '_pending_pressure_drop_callbacks', ()))}")
    lines.append(f"flow_active={consumer.flow_active} flow_control_active={_safe(app.flow_control.is_active)} "
                 f"in_recovery={app.in_recovery} recovery_completed="
                 f"{_safe(lambda: app.tables.recovery.completed.is_set())} generation={app.consumer_generation_id} "
                 f"queues: {'; '.join(queues) or '-'}")
    return lines


def log_partition_report(sa: Any, logger: logging.Logger, why: str) -> None:
    """Log :func:`partition_report` (``diag: partitions (...)``), never raising."""
    try:
        logger.warning("diag: partitions (%s) stats=%s\n%s", why, dict(sa.stats),
                       "\n".join("diag:   " + x for x in partition_report(sa)))
    except Exception as exc:  # noqa: BLE001 - diagnostics must never hurt the worker
        logger.warning("diag: partitions (%s) failed: %r", why, exc)


def install_diagnostics(sa: Any, interval_s: float) -> None:
    """A Faust timer logging the consumer's assignment, paused partitions and fetch positions every interval."""
    app = sa.app
    logger = logging.getLogger("streams.worker.diag")

    @app.timer(interval=interval_s)
    async def _diag() -> None:
        log_partition_report(sa, logger, "periodic")


def install_publish_failure(sa: Any, tx_prefix: str) -> None:
    """Fault injection for the fault suite (``FUELCARD_FAULT_FAIL_PUBLISH=<tx id prefix>``; never set otherwise):
    the agent's publish of any batch holding a decision for such a tx fails before anything is delivered — a
    delivery lost across a broker outage — so a test can check the batch is never acknowledged, by this worker's
    commits or by its stop, and that the next worker decides it (F10, tests/faults/test_interrupted_batch_broker.py).
    """
    marker = f'"tx_id":"{tx_prefix}'.encode()
    real = sa.publish
    logger = logging.getLogger("streams.worker.diag")

    async def publish(out: Any) -> None:
        if any(marker in v for t, _, v, _ in out if t.endswith(".decisions")):
            logger.warning("fault injection: the publish of a batch with %s* decisions fails", tx_prefix)
            out.clear()
            raise ConnectionError(f"fault injection: publish of {tx_prefix}* decisions failed")
        await real(out)

    sa.publish = publish


def run(argv: list[str] | None = None) -> None:
    """Build the app and run a Faust worker until SIGTERM."""
    import faust

    args = parser().parse_args(argv)
    if args.loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")  # libuv event loop: the agents are dominated by event-loop overhead
    if args.sink.startswith("jsonl:") and "::" not in args.sink:
        args.sink = f"{args.sink}::{os.getpid()}"
    if os.environ.get("FUELCARD_FAUST_RECOVERY_PATCH", "1") != "0":  # "0" only to show the race it closes
        patch_faust_recovery()
        patch_faust_commit_safety()
        patch_faust_fetch_drops()
    cfg = build_config(args)
    if os.environ.get("FUELCARD_FAUST_RECOVERY_PATCH", "1") != "0":
        from streams.broker import bootstrap_servers
        from streams.cluster import AGENT_SOURCES

        topics = sorted({spec.name(cfg.prefix) for a in cfg.agents for spec in AGENT_SOURCES.get(a, ())})
        try:
            set_now = asyncio.run(commit_unset_offsets(bootstrap_servers(cfg.broker_url), cfg.app_id, topics))
            global _HEADS_COMMITTED  # noqa: PLW0603 - process-wide switch read by the patched Faust consumer
            _HEADS_COMMITTED = True
            if set_now:
                logging.getLogger("streams.worker.diag").warning("committed beginning offsets: %s", set_now)
        except Exception as exc:  # noqa: BLE001 - the worker still runs (Faust resets to earliest)
            logging.getLogger("streams.worker.diag").warning("could not commit beginning offsets: %r", exc)
    if args.sink_batch:
        cfg.sink_batch = args.sink_batch
    if args.sink_within:
        cfg.sink_within_s = args.sink_within
    sa = create_app(cfg)
    if os.environ.get("FUELCARD_FAULT_FAIL_PUBLISH"):
        install_publish_failure(sa, os.environ["FUELCARD_FAULT_FAIL_PUBLISH"])
    if args.diag_interval > 0:
        install_diagnostics(sa, args.diag_interval)
    logging.basicConfig(level=args.loglevel)
    Path(os.environ.get("FUELCARD_WORKER_PIDFILE", os.devnull)).write_text(str(os.getpid()))
    level = getattr(logging, str(args.loglevel).upper(), logging.WARNING)

    class _Worker(faust.Worker):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: logging.Logger, level_: int) -> None:
            super().on_setup_root_logger(logger, level_)
            # aiokafka/faust debug records cost ~0.3 ms per produced message even when nothing prints them.
            for name in ("aiokafka", "faust", "mode", "kafka"):
                logging.getLogger(name).setLevel(max(level, logging.INFO))

        def _on_sigusr1(self) -> None:
            # the supervisor's watchdog sends SIGUSR1 before it restarts a stalled worker (streams.cluster)
            log_partition_report(sa, logging.getLogger("streams.worker.diag"), "SIGUSR1")
            dump_async_state(logging.getLogger("streams.worker.diag"))
            super()._on_sigusr1()

    worker = _Worker(sa.app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    run(sys.argv[1:])

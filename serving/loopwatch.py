"""Event-loop stall detector (debug option): ``FUELCARD_LOOP_WATCH_MS=20`` (threshold in ms).

A heartbeat task on the server's event loop stamps the time every few milliseconds; a watcher thread checks the
stamp and, while the loop is late by more than the threshold, samples the stack of the loop's thread and of every
other busy Python thread (``sys._current_frames``). When the loop catches up, one line per stall is logged (logger
``serving.loopwatch``, and appended as JSON to ``FUELCARD_LOOP_WATCH_FILE`` when set) with its duration, the
garbage collections that ran during it and the most frequent stacks. :func:`LoopWatch.summary` returns the stall
count and durations (the API benchmark reports them when its server runs with the flag).

The watcher needs the GIL to take a sample: a stall caused by a thread that holds the GIL in C code shows as the
stack that thread is in when it releases it, which names the culprit too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

log = logging.getLogger("serving.loopwatch")
IDLE_FRAMES = ("wait", "select", "poll", "_worker", "get", "sleep", "accept", "recv", "run_forever")


def _stack(frame: Any, depth: int = 12) -> str:
    out = []
    while frame is not None and len(out) < depth:  # innermost first; no source lines read (cheap)
        code = frame.f_code
        out.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno}:{code.co_name}")
        frame = frame.f_back
    return " < ".join(out)


def _busy(frame: Any) -> bool:
    return frame.f_code.co_name not in IDLE_FRAMES


class LoopWatch:
    """Heartbeat on the loop + watcher thread; see the module docstring."""

    def __init__(self, threshold_ms: float = 20.0, *, beat_ms: float = 5.0, path: str | None = None) -> None:
        self.threshold_s = threshold_ms / 1000.0
        self.beat_s = beat_ms / 1000.0
        self.path = path
        self.beat = time.perf_counter()
        self.stalls: list[float] = []  # durations in ms
        self.where: dict[str, float] = {"on_cpu_ms": 0.0, "runqueue_ms": 0.0, "blocked_ms": 0.0}
        self._loop_tid: int | None = None
        self._loop_native: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loopwatch", daemon=True)
        self._gc: list[tuple[int, int, float]] = []  # (sequence number, generation, ms): the last 50
        self._gc_seq = 0
        self._gc_t0 = 0.0
        self.gc_long: list[tuple[int, float]] = []  # every collection over 10 ms: (generation, ms)

    # ------------------------------------------------------------ lifecycle (called on the loop)

    def start(self) -> None:
        """Start the heartbeat on the running loop and the watcher thread."""
        self._loop_tid = threading.get_ident()
        self._loop_native = threading.get_native_id()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        gc.callbacks.append(self._on_gc)
        self._thread.start()

    async def stop(self) -> None:
        """Stop both and log the summary."""
        self._stop.set()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        log.warning("loopwatch summary %s", json.dumps(self.summary()))

    async def _heartbeat(self) -> None:
        while True:
            self.beat = time.perf_counter()
            await asyncio.sleep(self.beat_s)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        ms = (time.perf_counter() - self._gc_t0) * 1000
        self._gc_seq += 1
        self._gc.append((self._gc_seq, int(info.get("generation", -1)), ms))
        del self._gc[:-50]
        if ms > 10:
            self.gc_long.append((int(info.get("generation", -1)), round(ms, 1)))

    # ------------------------------------------------------------ the watcher thread

    def _watch(self) -> None:
        poll = min(0.01, self.threshold_s / 2)  # each wake-up takes the GIL: not more often than needed
        while not self._stop.is_set():
            time.sleep(poll)
            beat = self.beat
            late = time.perf_counter() - beat - self.beat_s
            if late <= self.threshold_s:
                continue
            gc_before = self._gc_seq
            sched0 = self._schedstat()
            stacks: Counter[str] = Counter()
            others: Counter[str] = Counter()
            samples = 0
            while self.beat == beat and not self._stop.is_set():
                if samples >= 20:  # enough to name the cause; keep the detector's own cost bounded
                    time.sleep(poll)
                    continue
                frames = sys._current_frames()  # noqa: SLF001 - the point of a stall detector
                me = threading.get_ident()
                for tid, frame in frames.items():
                    if tid == me:
                        continue
                    if tid == self._loop_tid:
                        stacks[_stack(frame)] += 1
                    elif _busy(frame):
                        others[_stack(frame, 8)] += 1
                samples += 1
                time.sleep(poll)
            ms = (time.perf_counter() - beat - self.beat_s) * 1000
            sched1 = self._schedstat()
            self.stalls.append(round(ms, 1))
            gcs = [(g, d) for seq, g, d in list(self._gc) if seq > gc_before]
            # Where the loop thread's time went from detection to the end of the stall (Linux schedstat): running
            # on a CPU, runnable but waiting for one (CPU starvation), or neither (blocked: the GIL, a lock, I/O).
            sched = {}
            if sched0 and sched1:
                since = (time.perf_counter() - beat - self.beat_s) * 1000 - late * 1000
                on, runq = (sched1[0] - sched0[0]) / 1e6, (sched1[1] - sched0[1]) / 1e6
                sched = {"watched_ms": round(since, 1), "on_cpu_ms": round(on, 1), "runqueue_ms": round(runq, 1),
                         "blocked_ms": round(max(since - on - runq, 0.0), 1)}
            for k in self.where:
                self.where[k] += sched.get(k, 0.0)
            record = {"at": round(time.time(), 3), "stall_ms": round(ms, 1), "samples": samples,
                      "gc": [(g, round(d, 1)) for g, d in gcs],
                      **sched,
                      "loop": stacks.most_common(3), "others": others.most_common(4)}
            if self.path:
                with contextlib.suppress(OSError), open(self.path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            else:
                log.warning("loop stall %.0f ms: %s", ms, json.dumps(record)[:4000])

    def _schedstat(self) -> tuple[int, int] | None:
        """(ns on a CPU, ns runnable waiting for a CPU) of the loop's thread, or None off Linux."""
        try:
            with open(f"/proc/self/task/{self._loop_native}/schedstat") as fh:
                on, wait, _ = fh.read().split()
            return int(on), int(wait)
        except (OSError, ValueError):
            return None

    def summary(self) -> dict[str, Any]:
        """Stall count, total and worst duration (ms) so far."""
        s = sorted(self.stalls)
        return {"stalls": len(s), "total_ms": round(sum(s), 1), "max_ms": s[-1] if s else 0.0,
                "p50_ms": s[len(s) // 2] if s else 0.0, "gc_over_10ms": self.gc_long[-20:],
                **{k: round(v, 1) for k, v in self.where.items()}}


def from_env() -> LoopWatch | None:
    """A :class:`LoopWatch` when ``FUELCARD_LOOP_WATCH_MS`` is set (debug option), else None."""
    raw = os.environ.get("FUELCARD_LOOP_WATCH_MS")
    if not raw:
        return None
    return LoopWatch(float(raw), path=os.environ.get("FUELCARD_LOOP_WATCH_FILE") or None)

"""Declarative spec of the per-card window features: what :func:`fuelcard.features.update_card` computes over
time windows, said once as data so that other engines can be generated from it.

``streams/flink`` compiles this spec to Flink SQL (event-time ``OVER ... RANGE`` windows for the per-transaction
trailing features, ``TUMBLE``/``HOP`` window TVFs for the per-card window aggregates; Python only in the scalar
UDFs below). The pure replays here are the reference the Flink job is tested against
(``tests/integration/test_flink_parity.py``), and ``tests/test_window_spec.py`` shows that the trailing features
equal the core's own replay through :func:`fuelcard.features.update_card`.

Semantics (identical in every engine):

* **trailing features** of a transaction at time ``t`` use the card's transactions with ``t - w < ts < t``
  (strictly before the current one; ``*_incl`` also add the current amount). Timestamps are in milliseconds;
  two transactions of one card in the same millisecond are an unsupported tie (the core counts the one it saw
  first, SQL ``RANGE`` windows count both).
* **window aggregates** bucket a card's transactions into tumbling / hopping windows in *local* time
  (UTC+8 by default, so a "day" is a local calendar day, the unit of the daily limits).

>>> [f.name for f in TRAILING_FEATURES][:4]
['card_n_1h', 'card_amt_1h', 'card_n_24h', 'card_amt_24h']
>>> local_hour(0.0, 8.0), local_weekday(0.0, 8.0)  # 1970-01-01 08:00 local, a Thursday
(8, 3)
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
NAN = float("nan")
DEFAULT_TZ_OFFSET_HOURS = 8.0


@dataclass(frozen=True)
class TrailingWindow:
    """A trailing event-time range ending at (and excluding) the current transaction."""

    label: str
    millis: int


@dataclass(frozen=True)
class TrailingFeature:
    """One per-transaction feature over a trailing window.

    ``kind``: ``count`` (earlier transactions in the window), ``amount`` (their summed amount, yuan),
    ``amount_incl`` (``amount`` plus the current one), ``mean`` (``amount / count``, NaN when empty).
    """

    name: str
    window: TrailingWindow
    kind: Literal["count", "amount", "amount_incl", "mean"]


@dataclass(frozen=True)
class ScalarFeature:
    """A per-transaction feature computed from the transaction alone by a pure function of its time."""

    name: str
    function: Literal["local_hour", "local_weekday"]


@dataclass(frozen=True)
class WindowAggregate:
    """Per-card aggregates over tumbling (``slide == size``) or hopping windows, in local time."""

    name: str
    kind: Literal["tumble", "hop"]
    size_ms: int
    slide_ms: int
    measures: tuple[Literal["tx_count", "amount_fen", "max_amount_fen", "station_count"], ...]


W_1H = TrailingWindow("1h", HOUR_MS)
W_24H = TrailingWindow("24h", DAY_MS)
W_7D = TrailingWindow("7d", 7 * DAY_MS)
W_30D = TrailingWindow("30d", 30 * DAY_MS)
TRAILING_WINDOWS: tuple[TrailingWindow, ...] = (W_1H, W_24H, W_7D, W_30D)

#: The window features of :data:`fuelcard.features.CARD_FEATURES` (same names, same values).
TRAILING_FEATURES: tuple[TrailingFeature, ...] = (
    TrailingFeature("card_n_1h", W_1H, "count"),
    TrailingFeature("card_amt_1h", W_1H, "amount"),
    TrailingFeature("card_n_24h", W_24H, "count"),
    TrailingFeature("card_amt_24h", W_24H, "amount"),
    TrailingFeature("card_spend_24h_incl", W_24H, "amount_incl"),
    TrailingFeature("card_n_7d", W_7D, "count"),
    TrailingFeature("card_amt_7d", W_7D, "amount"),
    TrailingFeature("card_mean_7d", W_7D, "mean"),
    TrailingFeature("card_n_30d", W_30D, "count"),
    TrailingFeature("card_amt_30d", W_30D, "amount"),
    TrailingFeature("card_spend_30d_incl", W_30D, "amount_incl"),
    TrailingFeature("card_mean_30d", W_30D, "mean"),
)
SCALAR_FEATURES: tuple[ScalarFeature, ...] = (
    ScalarFeature("hour_local", "local_hour"),
    ScalarFeature("weekday_local", "local_weekday"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in TRAILING_FEATURES) + tuple(f.name for f in SCALAR_FEATURES)

WINDOW_AGGREGATES: tuple[WindowAggregate, ...] = (
    WindowAggregate("card_daily", "tumble", DAY_MS, DAY_MS, ("tx_count", "amount_fen", "max_amount_fen",
                                                             "station_count")),
    WindowAggregate("card_24h_hourly", "hop", DAY_MS, HOUR_MS, ("tx_count", "amount_fen", "max_amount_fen")),
)
AGGREGATE_COLUMNS: tuple[str, ...] = ("tx_count", "amount_fen", "max_amount_fen", "station_count")


# ---------------------------------------------------------------- scalar functions (also Flink's Python UDFs)


def local_hour(ts_seconds: float, tz_offset_hours: float = DEFAULT_TZ_OFFSET_HOURS) -> int:
    """Hour of day in local time (same formula as the core's ``hour_local``)."""
    local = ts_seconds + tz_offset_hours * 3600.0
    return int(local % 86400.0 // 3600.0)


def local_weekday(ts_seconds: float, tz_offset_hours: float = DEFAULT_TZ_OFFSET_HOURS) -> int:
    """Weekday in local time, Monday = 0 (same formula as the core's ``weekday_local``)."""
    local = ts_seconds + tz_offset_hours * 3600.0
    return int((local // 86400.0 + 3) % 7)


SCALAR_FUNCTIONS = {"local_hour": local_hour, "local_weekday": local_weekday}


# ---------------------------------------------------------------- reference replays (pure Python)


@dataclass(frozen=True, slots=True)
class WindowEvent:
    """The columns the window features need; ``ts_ms`` is epoch milliseconds (UTC), money in fen."""

    tx_id: str
    card_id: str
    ts_ms: int
    amount_fen: int
    station_id: str


def event_from_mapping(d: Mapping[str, Any]) -> WindowEvent:
    """A :class:`WindowEvent` from a dict with ``ts`` as datetime / epoch seconds or ``ts_ms``."""
    if "ts_ms" in d and d["ts_ms"] is not None:
        ts_ms = int(d["ts_ms"])
    else:
        ts = d["ts"]
        ts_ms = round((ts.timestamp() if hasattr(ts, "timestamp") else float(ts)) * 1000)
    return WindowEvent(str(d["tx_id"]), str(d["card_id"]), ts_ms, int(d["amount_fen"]), str(d["station_id"]))


def _ordered(events: Iterable[WindowEvent]) -> list[WindowEvent]:
    return sorted(events, key=lambda e: (e.ts_ms, e.tx_id))


def trailing_features(events: Iterable[WindowEvent],
                      tz_offset_hours: float = DEFAULT_TZ_OFFSET_HOURS) -> dict[str, dict[str, float]]:
    """Every transaction's trailing and scalar features (``{tx_id: {feature: value}}``), replayed in
    event-time order with one deque per card and window."""
    longest = max(w.millis for w in TRAILING_WINDOWS)
    history: dict[str, deque[tuple[int, int]]] = defaultdict(deque)
    out: dict[str, dict[str, float]] = {}
    for e in _ordered(events):
        hist = history[e.card_id]
        while hist and hist[0][0] <= e.ts_ms - longest:
            hist.popleft()
        sums: dict[str, tuple[int, int]] = {}
        for w in TRAILING_WINDOWS:
            lo = e.ts_ms - w.millis
            n = s = 0
            for ts, amt in reversed(hist):
                if ts <= lo:
                    break
                n += 1
                s += amt
            sums[w.label] = (n, s)
        row: dict[str, float] = {}
        for f in TRAILING_FEATURES:
            n, s = sums[f.window.label]
            row[f.name] = _trailing_value(f.kind, n, s, e.amount_fen)
        for sf in SCALAR_FEATURES:
            row[sf.name] = float(SCALAR_FUNCTIONS[sf.function](e.ts_ms / 1000.0, tz_offset_hours))
        out[e.tx_id] = row
        hist.append((e.ts_ms, e.amount_fen))
    return out


def _trailing_value(kind: str, n: int, s: int, amount_fen: int) -> float:
    if kind == "count":
        return float(n)
    if kind == "amount":
        return s / 100.0
    if kind == "amount_incl":
        return (s + amount_fen) / 100.0
    return s / n / 100.0 if n else NAN


def window_starts(ts_ms: int, agg: WindowAggregate, tz_offset_hours: float = DEFAULT_TZ_OFFSET_HOURS) -> list[int]:
    """Epoch-ms starts of every window of ``agg`` that contains ``ts_ms`` (aligned to local time).

    >>> agg = WindowAggregate("d", "tumble", DAY_MS, DAY_MS, ("tx_count",))
    >>> window_starts(0, agg)  # 1970-01-01 08:00 local is in the local day that began at 16:00 UTC the day before
    [-28800000]
    """
    offset = round(tz_offset_hours * HOUR_MS)
    local = ts_ms + offset
    last = local - local % agg.slide_ms
    starts = []
    start = last
    while start > local - agg.size_ms:
        starts.append(start - offset)
        start -= agg.slide_ms
    return sorted(starts)


def window_aggregates(events: Iterable[WindowEvent], tz_offset_hours: float = DEFAULT_TZ_OFFSET_HOURS,
                      ) -> dict[tuple[str, str, int], dict[str, int]]:
    """Every spec aggregate per ``(aggregate name, card_id, window start ms)``."""
    acc: dict[tuple[str, str, int], dict[str, Any]] = {}
    for e in events:
        for agg in WINDOW_AGGREGATES:
            for start in window_starts(e.ts_ms, agg, tz_offset_hours):
                key = (agg.name, e.card_id, start)
                a = acc.setdefault(key, {"tx_count": 0, "amount_fen": 0, "max_amount_fen": 0, "stations": set()})
                a["tx_count"] += 1
                a["amount_fen"] += e.amount_fen
                a["max_amount_fen"] = max(a["max_amount_fen"], e.amount_fen)
                a["stations"].add(e.station_id)
    out: dict[tuple[str, str, int], dict[str, int]] = {}
    for key, a in acc.items():
        agg = next(x for x in WINDOW_AGGREGATES if x.name == key[0])
        values = {"tx_count": a["tx_count"], "amount_fen": a["amount_fen"], "max_amount_fen": a["max_amount_fen"],
                  "station_count": len(a["stations"])}
        out[key] = {m: values[m] for m in agg.measures}
    return out


def same_value(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    """Equality for feature values: NaN equals NaN/None, floats within a relative tolerance."""
    a_nan = a is None or (isinstance(a, float) and math.isnan(a))
    b_nan = b is None or (isinstance(b, float) and math.isnan(b))
    if a_nan or b_nan:
        return a_nan and b_nan
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-9)  # type: ignore[arg-type]

"""Compile the window-feature spec (:mod:`fuelcard.window_spec`) to Flink SQL.

Nothing here knows a feature by name: every SELECT is generated from the spec, so the Flink job computes the
same features as the pure core (``tests/integration/test_flink_parity.py`` runs it and compares).

* per-transaction trailing features: one event-time ``OVER (PARTITION BY card_id ORDER BY ts RANGE ...)``
  window per distinct range (Flink allows one OVER window per SELECT), joined back per transaction with
  zero-width interval joins (``b.ts BETWEEN a.ts AND a.ts``, so join state is bounded by the watermark);
* per-card window aggregates: ``TUMBLE`` / ``HOP`` window table functions, aligned to local days by running
  the session in the network's time zone;
* scalar features: Python scalar UDFs that call the core's pure functions (the only Python in the job).

The source declares an event-time watermark (``ts - max_out_of_orderness``); events later than that are
dropped by the windows, which is why the producer keys by card and the stream is replayed in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

from fuelcard.window_spec import (
    AGGREGATE_COLUMNS,
    SCALAR_FEATURES,
    TRAILING_FEATURES,
    TRAILING_WINDOWS,
    WINDOW_AGGREGATES,
    TrailingFeature,
    TrailingWindow,
    WindowAggregate,
)

SOURCE = "card_tx"
FEATURES_SINK = "card_window_features"
AGGREGATES_SINK = "card_window_aggregates"
EPOCH = "TO_TIMESTAMP_LTZ(0, 0)"


@dataclass(frozen=True)
class KafkaEndpoint:
    """Where a Kafka table reads or writes (``properties`` are extra ``properties.*`` client settings)."""

    bootstrap: str
    topic: str
    group_id: str = "fuelcard-flink"
    bounded: bool = False
    properties: tuple[tuple[str, str], ...] = ()


def session_time_zone(tz_offset_hours: float) -> str:
    """The Flink session zone for a fixed UTC offset (``GMT+08:00``): windows align to local days.

    >>> session_time_zone(8), session_time_zone(-3.5), session_time_zone(0)
    ('GMT+08:00', 'GMT-03:30', 'UTC')
    """
    if tz_offset_hours == 0:
        return "UTC"
    sign = "+" if tz_offset_hours > 0 else "-"
    minutes = round(abs(tz_offset_hours) * 60)
    return f"GMT{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def interval_literal(millis: int) -> str:
    """A ``DAY TO SECOND`` interval literal with millisecond precision.

    >>> interval_literal(3_600_000 - 1)
    "INTERVAL '0 00:59:59.999' DAY(3) TO SECOND(3)"
    """
    days, rest = divmod(millis, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, ms = divmod(rest, 1000)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}' DAY(3) TO SECOND(3)"


def _with(options: dict[str, str]) -> str:
    return ",\n  ".join(f"'{k}' = '{v}'" for k, v in options.items())


def _kafka_options(ep: KafkaEndpoint, *, source: bool) -> dict[str, str]:
    opts = {"connector": "kafka", "topic": ep.topic, "properties.bootstrap.servers": ep.bootstrap,
            "format": "json", "json.timestamp-format.standard": "ISO-8601"}
    if source:
        opts.update({"properties.group.id": ep.group_id, "scan.startup.mode": "earliest-offset",
                     "json.ignore-parse-errors": "true"})
        if ep.bounded:
            opts["scan.bounded.mode"] = "latest-offset"
    else:
        # keyed by card like every payment topic: one card's rows stay in order on one partition
        opts.update({"sink.delivery-guarantee": "at-least-once", "key.format": "raw", "key.fields": "card_id"})
    opts.update({f"properties.{k}": v for k, v in ep.properties})
    return opts


def kafka_source_ddl(ep: KafkaEndpoint, *, out_of_orderness_ms: int = 5000, table: str = SOURCE) -> str:
    """Source over the authorisations topic (JSON :class:`~fuelcard.events.Authorisation` payloads, ISO ``ts``)."""
    return f"""CREATE TEMPORARY TABLE {table} (
  tx_id STRING,
  card_id STRING,
  station_id STRING,
  amount_fen BIGINT,
  ts TIMESTAMP_LTZ(3),
  WATERMARK FOR ts AS ts - {interval_literal(out_of_orderness_ms)}
) WITH (
  {_with(_kafka_options(ep, source=True))}
)"""


def file_source_ddl(path: str, *, fmt: str = "csv", out_of_orderness_ms: int = 5000, table: str = SOURCE) -> str:
    """Source over exported history (CSV columns ``tx_id,card_id,station_id,amount_fen,ts_ms``) for backfills."""
    return f"""CREATE TEMPORARY TABLE {table} (
  tx_id STRING,
  card_id STRING,
  station_id STRING,
  amount_fen BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - {interval_literal(out_of_orderness_ms)}
) WITH (
  {_with({"connector": "filesystem", "path": path, "format": fmt})}
)"""


def _feature_columns() -> list[tuple[str, str]]:
    return [(f.name, "DOUBLE") for f in TRAILING_FEATURES] + [(s.name, "DOUBLE") for s in SCALAR_FEATURES]


def features_sink_ddl(options: dict[str, str], *, table: str = FEATURES_SINK) -> str:
    """Sink of one row per transaction: ids, time and every spec feature."""
    cols = ",\n  ".join(f"{n} {t}" for n, t in _feature_columns())
    return f"""CREATE TEMPORARY TABLE {table} (
  tx_id STRING,
  card_id STRING,
  ts TIMESTAMP_LTZ(3),
  {cols}
) WITH (
  {_with(options)}
)"""


def aggregates_sink_ddl(options: dict[str, str], *, table: str = AGGREGATES_SINK) -> str:
    """Sink of one row per (aggregate, card, window); measures an aggregate lacks are NULL."""
    cols = ",\n  ".join(f"{c} BIGINT" for c in AGGREGATE_COLUMNS)
    return f"""CREATE TEMPORARY TABLE {table} (
  aggregate STRING,
  card_id STRING,
  window_start_ms BIGINT,
  window_end_ms BIGINT,
  {cols}
) WITH (
  {_with(options)}
)"""


def kafka_sink_options(ep: KafkaEndpoint) -> dict[str, str]:
    """Options of a JSON Kafka sink table."""
    return _kafka_options(ep, source=False)


def _view(w: TrailingWindow) -> str:
    return f"trailing_{w.label}"


def trailing_view_sql(w: TrailingWindow, *, source: str = SOURCE, streaming: bool = True) -> str:
    """One OVER window: count and sum of the card's transactions in ``[ts - range + 1 ms, ts]``.

    The range ends one millisecond short so that ``(t - w, t]`` matches the core's strict lower bound.
    Streaming orders by the event-time attribute; batch mode (whose planner cannot generate interval
    arithmetic on TIMESTAMP_LTZ in OVER ranges) orders by the same instant as epoch milliseconds.

    The always-true ``amount_fen > -range`` filter is load-bearing: Flink 2.3's planner digests OVER windows
    without their range constants, so structurally identical views with different ranges are merged into one
    (every view then silently gets the same range). The distinct literal keeps their plans apart; the parity
    test would catch a regression.
    """
    if streaming:
        order, lower = "ts", interval_literal(w.millis - 1)
    else:
        order, lower = "ts_ms", str(w.millis - 1)
    return f"""CREATE TEMPORARY VIEW {_view(w)} AS
SELECT tx_id, card_id, ts, amount_fen,
  COUNT(*) OVER w AS n_incl,
  SUM(amount_fen) OVER w AS s_incl
FROM {source}
WHERE amount_fen > -{w.millis}
WINDOW w AS (PARTITION BY card_id ORDER BY {order} RANGE BETWEEN {lower} PRECEDING AND CURRENT ROW)"""


def _trailing_expr(f: TrailingFeature, alias: str) -> str:
    n, s, a = f"{alias}.n_incl", f"{alias}.s_incl", f"{alias}.amount_fen"
    if f.kind == "count":
        return f"CAST({n} - 1 AS DOUBLE)"
    if f.kind == "amount":
        return f"CAST({s} - {a} AS DOUBLE) / 1E2"
    if f.kind == "amount_incl":
        return f"CAST({s} AS DOUBLE) / 1E2"
    return f"CASE WHEN {n} > 1 THEN CAST({s} - {a} AS DOUBLE) / ({n} - 1) / 1E2 ELSE CAST(NULL AS DOUBLE) END"


def udf_name(function: str) -> str:
    """Name under which the Python scalar UDF for a spec function is registered."""
    return f"fc_{function}"


def features_select_sql() -> str:
    """Join the per-range OVER views per transaction and compute every spec feature."""
    aliases = {w.label: f"w{i}" for i, w in enumerate(TRAILING_WINDOWS)}
    first = TRAILING_WINDOWS[0]
    a0 = aliases[first.label]
    joins = "\n".join(
        f"JOIN {_view(w)} {aliases[w.label]} ON {aliases[w.label]}.tx_id = {a0}.tx_id "
        f"AND {aliases[w.label]}.ts BETWEEN {a0}.ts AND {a0}.ts"
        for w in TRAILING_WINDOWS[1:]
    )
    epoch_s = f"CAST(TIMESTAMPDIFF(SECOND, {EPOCH}, {a0}.ts) AS BIGINT)"
    exprs = [f"{_trailing_expr(f, aliases[f.window.label])} AS {f.name}" for f in TRAILING_FEATURES]
    exprs += [f"CAST({udf_name(s.function)}({epoch_s}) AS DOUBLE) AS {s.name}" for s in SCALAR_FEATURES]
    body = ",\n  ".join(exprs)
    return f"""SELECT {a0}.tx_id, {a0}.card_id, {a0}.ts,
  {body}
FROM {_view(first)} {a0}
{joins}"""


def _window_ms(col: str) -> str:
    # window_start/window_end are local wall-clock TIMESTAMPs: cast to LTZ in the session zone, then epoch ms
    return f"CAST(TIMESTAMPDIFF(SECOND, {EPOCH}, CAST({col} AS TIMESTAMP_LTZ(3))) AS BIGINT) * 1000"


def aggregate_select_sql(agg: WindowAggregate, *, source: str = SOURCE) -> str:
    """One TUMBLE / HOP window TVF grouped per card; measures outside the aggregate are NULL."""
    if agg.kind == "tumble":
        tvf = f"TUMBLE(TABLE {source}, DESCRIPTOR(ts), {interval_literal(agg.size_ms)})"
    else:
        tvf = (f"HOP(TABLE {source}, DESCRIPTOR(ts), {interval_literal(agg.slide_ms)}, "
               f"{interval_literal(agg.size_ms)})")
    measure_sql = {"tx_count": "COUNT(*)", "amount_fen": "SUM(amount_fen)", "max_amount_fen": "MAX(amount_fen)",
                   "station_count": "COUNT(DISTINCT station_id)"}
    cols = ",\n  ".join(
        f"CAST({measure_sql[c]} AS BIGINT) AS {c}" if c in agg.measures else f"CAST(NULL AS BIGINT) AS {c}"
        for c in AGGREGATE_COLUMNS
    )
    return f"""SELECT '{agg.name}' AS aggregate, card_id,
  {_window_ms("window_start")} AS window_start_ms,
  {_window_ms("window_end")} AS window_end_ms,
  {cols}
FROM TABLE({tvf})
GROUP BY card_id, window_start, window_end"""


def pipeline_statements(*, features_sink: str = FEATURES_SINK, aggregates_sink: str = AGGREGATES_SINK,
                        with_aggregates: bool = True, streaming: bool = True) -> tuple[list[str], list[str]]:
    """``(views, inserts)``: the CREATE VIEW statements and the INSERTs of one job (run as a statement set)."""
    views = [trailing_view_sql(w, streaming=streaming) for w in TRAILING_WINDOWS]
    inserts = [f"INSERT INTO {features_sink}\n{features_select_sql()}"]
    if with_aggregates:
        union = "\nUNION ALL\n".join(aggregate_select_sql(a) for a in WINDOW_AGGREGATES)
        inserts.append(f"INSERT INTO {aggregates_sink}\n{union}")
    return views, inserts

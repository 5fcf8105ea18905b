"""The window-feature spec equals the core's replay, and compiles to the Flink SQL it promises (no JVM here;
tests/integration/test_flink_parity.py runs the SQL on Flink)."""

from __future__ import annotations

import random

from fuelcard import features as F
from fuelcard import window_spec as W
from streams.flink import sql as S


def _events(n: int = 1500, seed: int = 3) -> list[W.WindowEvent]:
    rng = random.Random(seed)
    t = 1_767_225_600_000
    out = []
    for i in range(n):
        t += rng.choice([1, 500, 60_000, 3_599_999, 3_600_000, 3_600_001]) if i % 7 == 0 else rng.randint(1, 9_000_000)
        out.append(W.WindowEvent(f"t{i:05d}", f"c{rng.randint(0, 12)}", t, rng.randint(100, 80_000),
                                 f"s{rng.randint(0, 5)}"))
    return out


def test_trailing_features_equal_update_card_replay() -> None:
    events = _events()
    spec = W.trailing_features(events)
    states: dict[str, F.CardState] = {}
    for e in sorted(events, key=lambda e: (e.ts_ms, e.tx_id)):
        state, feats = F.update_card(states.get(e.card_id), F.Tx(e.tx_id, e.ts_ms / 1000, e.card_id, e.station_id,
                                                                 e.amount_fen))
        states[e.card_id] = state
        core = dict(zip(F.CARD_FEATURES, feats, strict=True))
        for name, value in spec[e.tx_id].items():
            assert W.same_value(value, core[name]), (e.tx_id, name, value, core[name])
    assert set(W.FEATURE_NAMES) <= set(F.CARD_FEATURES), "every spec feature is a core feature"


def test_window_aggregates_cover_each_event_once_per_window() -> None:
    events = _events(400)
    aggs = W.window_aggregates(events)
    for agg in W.WINDOW_AGGREGATES:
        total = sum(v["tx_count"] for k, v in aggs.items() if k[0] == agg.name)
        assert total == len(events) * (agg.size_ms // agg.slide_ms)
    # local days: an event at 23:59 local and one at 00:01 the next local day fall in different daily windows
    day = W.WINDOW_AGGREGATES[0]
    late = W.window_starts(1_767_283_140_000, day)  # 2026-01-01 15:59 UTC = 23:59 local
    early = W.window_starts(1_767_283_260_000, day)  # 00:01 local on Jan 2
    assert late != early and early[0] - late[0] == W.DAY_MS


def test_compiled_sql_uses_event_time_windows_and_python_only_in_scalar_udfs() -> None:
    views, inserts = S.pipeline_statements()
    assert len(views) == len(W.TRAILING_WINDOWS)
    for w, v in zip(W.TRAILING_WINDOWS, views, strict=True):
        assert "ORDER BY ts RANGE BETWEEN " + S.interval_literal(w.millis - 1) in v
        assert f"amount_fen > -{w.millis}" in v  # keeps the planner from merging the OVER windows
    feats, aggs = inserts
    for f in W.FEATURE_NAMES:
        assert f" AS {f}" in feats
    assert "TUMBLE(TABLE card_tx, DESCRIPTOR(ts)" in aggs and "HOP(TABLE card_tx, DESCRIPTOR(ts)" in aggs
    ddl = S.kafka_source_ddl(S.KafkaEndpoint("127.0.0.1:1", "t"))
    assert "WATERMARK FOR ts AS ts - INTERVAL" in ddl
    assert {S.udf_name(s.function) for s in W.SCALAR_FEATURES} == {"fc_local_hour", "fc_local_weekday"}
    assert S.session_time_zone(8) == "GMT+08:00"


def test_flink_cli_prints_the_generated_sql() -> None:
    from typer.testing import CliRunner

    from fuelcard.commands.flink import app

    result = CliRunner().invoke(app, ["sql"])
    assert result.exit_code == 0, result.output
    assert "WATERMARK FOR ts" in result.output and "TUMBLE(" in result.output and "HOP(" in result.output

"""Query parameters: one audited binding path, nothing formatted into SQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from warehouse.params import ParamError, bind, check_identifier, coerce, placeholders
from warehouse.queries import QUERIES, dashboard_queries, get_query


def test_native_style_keeps_sql_and_passes_text() -> None:
    sql = "SELECT * FROM t WHERE d >= {d:Date} AND s = {s:String} AND n < {n:UInt32}"
    out, values = bind(sql, {"d": date(2026, 1, 2), "s": "a'b", "n": "7"}, style="native")
    assert out == sql
    assert values == {"d": "2026-01-02", "s": "a'b", "n": "7"}


def test_pyformat_style_for_clickhouse_driver() -> None:
    sql = "SELECT formatDateTime(ts, '%Y') FROM t WHERE s = {s:String} AND ts > {t:DateTime('UTC')}"
    out, values = bind(sql, {"s": "x", "t": "2026-01-01T08:00:00+08:00"}, style="pyformat")
    assert out == "SELECT formatDateTime(ts, '%%Y') FROM t WHERE s = %(s)s AND ts > %(t)s"
    assert values["t"] == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


def test_no_params_leaves_percent_alone() -> None:
    assert bind("SELECT '%'", None, style="pyformat") == ("SELECT '%'", {})


@pytest.mark.parametrize(
    ("value", "typ"),
    [("x", "Int64"), (1.5, "UInt32"), (-1, "UInt8"), ("2026-13-01", "Date"), (3, "String"), (True, "Int64"),
     (float("nan"), "Float64"), ("1", "Array(String)")],
)
def test_bad_values_are_rejected(value: object, typ: str) -> None:
    with pytest.raises(ParamError):
        coerce(value, typ, name="p")


def test_missing_and_unexpected_params() -> None:
    with pytest.raises(ParamError, match="missing"):
        bind("SELECT {a:Int64}", {}, style="native")
    with pytest.raises(ParamError, match="unexpected"):
        bind("SELECT {a:Int64}", {"a": 1, "b": 2}, style="native")
    with pytest.raises(ParamError, match="two types"):
        placeholders("SELECT {a:Int64}, {a:String}")


def test_identifiers() -> None:
    assert check_identifier("fact_transactions") == "fact_transactions"
    for bad in ("t; DROP", "1abc", "a-b", ""):
        with pytest.raises(ParamError):
            check_identifier(bad)


def test_named_queries_are_well_formed() -> None:
    for q in QUERIES.values():
        declared = placeholders(q.sql)
        assert set(q.defaults) <= set(declared), q.name
        assert q.description and q.sql.strip().upper().startswith(("SELECT", "WITH")), q.name
        if not q.modern_only:  # the 18.16 dialect: no CTE, no window function, at most one JOIN
            text = q.sql.upper()
            assert not text.lstrip().startswith("WITH") and " OVER (" not in text, q.name
            assert text.count(" JOIN ") <= 1, q.name
    assert {q.name for q in dashboard_queries()} >= {"sales_daily", "risk_kpis_daily", "points_daily",
                                                     "member_activity_daily", "top_stations"}
    with pytest.raises(ParamError, match="unknown query"):
        get_query("nope")
    with pytest.raises(ParamError, match="has no parameter"):
        get_query("sales_daily").params_with_defaults({"station": "x"})

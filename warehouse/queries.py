"""Every dashboard and report query, in one place, by name.

Queries use ``{name:Type}`` placeholders (bound safely by :mod:`warehouse.params`), run unchanged on chdb and
on ClickHouse server 18.16 (no CTEs, no window functions, at most one JOIN, no positional GROUP BY), unless
marked ``modern_only`` with the feature they need; those raise
:class:`warehouse.engine.UnsupportedOnEngine` on an old server.

Rollup tables are always re-aggregated (``sum``/``uniqMerge``): background merges may not have run.
Base facts are read with ``FINAL`` so a row stored twice (replay, redelivery) counts once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from warehouse.params import ParamError, placeholders


@dataclass(frozen=True)
class NamedQuery:
    """A named, parametrised query with defaults and a one-line description."""

    name: str
    description: str
    sql: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Empty when portable; otherwise the modern feature it needs (e.g. "window functions").
    modern_only: str = ""
    #: True for what the operations dashboards poll (rollups and small tables: must stay fast at any size);
    #: False for reports and drill-downs over base facts (FINAL scans, run on demand).
    dashboard: bool = True

    def params_with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        declared = placeholders(self.sql)
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise ParamError(f"query {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                             f"it takes: {', '.join(sorted(declared)) or 'none'}")
        merged = {**self.defaults, **params}
        return {k: v for k, v in merged.items() if k in declared}


_RANGE = {"date_from": "1970-01-01", "date_to": "2100-01-01"}

QUERIES: dict[str, NamedQuery] = {}


def _q(q: NamedQuery) -> None:
    QUERIES[q.name] = q


_q(NamedQuery(
    "sales_daily",
    "Sales per day and product: purchases, litres, gross/refunded/net fen (rollup).",
    """
SELECT date, product,
       sum(transactions) AS transactions, sum(captured) AS captured, sum(litres_sum) AS litres,
       sum(captured_fen) AS gross_fen, sum(refunded_fen) AS refund_fen, sum(captured_fen - refunded_fen) AS net_fen
FROM rollup_sales_daily
WHERE date >= {date_from:Date} AND date <= {date_to:Date}
GROUP BY date, product
ORDER BY date, product
""", _RANGE))

_q(NamedQuery(
    "sales_hourly_station",
    "Sales per hour and product at one station (rollup).",
    """
SELECT hour, product, sum(captured) AS captured, sum(litres_sum) AS litres,
       sum(captured_fen - refunded_fen) AS net_fen
FROM rollup_sales_hourly
WHERE station_id = {station_id:String}
  AND hour >= toDateTime(toDate({date_from:Date})) AND hour < toDateTime(toDate({date_to:Date})) + 86400
GROUP BY hour, product
ORDER BY hour, product
""", _RANGE))

_q(NamedQuery(
    "sales_by_hour_of_day",
    "Network traffic profile: purchases and litres by UTC hour of day (rollup).",
    """
SELECT toHour(hour) AS hour_utc, sum(captured) AS captured, sum(litres_sum) AS litres
FROM rollup_network_hourly
WHERE hour >= toDateTime(toDate({date_from:Date})) AND hour < toDateTime(toDate({date_to:Date})) + 86400
GROUP BY hour_utc
ORDER BY hour_utc
""", _RANGE))

_q(NamedQuery(
    "top_stations",
    "Stations ranked by net sales in a date range (rollup).",
    """
SELECT station_id, sum(captured) AS captured, sum(litres_sum) AS litres,
       sum(captured_fen - refunded_fen) AS net_fen, sum(fraud) AS fraud
FROM rollup_sales_daily
WHERE date >= {date_from:Date} AND date <= {date_to:Date}
GROUP BY station_id
ORDER BY net_fen DESC, station_id
LIMIT {limit:UInt32}
""", {**_RANGE, "limit": 20}))

_q(NamedQuery(
    "sales_by_region",
    "Net sales per region and product (rollup joined to the station dimension; one JOIN).",
    """
SELECT s.region AS region, r.product AS product, sum(r.c) AS captured, sum(r.l) AS litres,
       sum(r.n) AS net_fen
FROM (
    SELECT station_id, product, sum(captured) AS c, sum(litres_sum) AS l, sum(captured_fen - refunded_fen) AS n
    FROM rollup_sales_daily
    WHERE date >= {date_from:Date} AND date <= {date_to:Date}
    GROUP BY station_id, product
) AS r
ANY LEFT JOIN (SELECT station_id, region FROM dim_station FINAL) AS s USING station_id
GROUP BY region, product
ORDER BY region, product
""", _RANGE))

_q(NamedQuery(
    "dashboard_window",
    "First and last day with sales in the rollup, and the number of days (the dashboard's window anchor).",
    """
SELECT min(date) AS first_date, max(date) AS last_date, count() AS rollup_rows
FROM rollup_sales_daily
"""))

_q(NamedQuery(
    "station_map",
    "Every station's position and type with its sales in a date range (dimension + rollup; one JOIN).",
    """
SELECT s.station_id AS station_id, s.name AS name, s.region AS region, s.station_type AS station_type,
       s.lat AS lat, s.lon AS lon, r.n AS net_fen, r.c AS captured, r.l AS litres, r.f AS fraud
FROM (SELECT station_id, name, region, station_type, lat, lon FROM dim_station FINAL) AS s
ANY LEFT JOIN (
    SELECT station_id, sum(captured_fen - refunded_fen) AS n, sum(captured) AS c, sum(litres_sum) AS l,
           sum(fraud) AS f
    FROM rollup_sales_daily
    WHERE date >= {date_from:Date} AND date <= {date_to:Date}
    GROUP BY station_id
) AS r USING station_id
ORDER BY station_id
LIMIT {limit:UInt32}
""", {**_RANGE, "limit": 5000}))

_q(NamedQuery(
    "member_density",
    "Member homes counted on a grid of cell_deg degrees (cells with at least min_members; no member's own "
    "coordinates leave the warehouse).",
    """
SELECT round(home_lat / {cell_deg:Float64}) * {cell_deg:Float64} AS lat,
       round(home_lon / {cell_deg:Float64}) * {cell_deg:Float64} AS lon,
       count() AS members
FROM dim_member FINAL
WHERE home_lat != 0
GROUP BY lat, lon
HAVING count() >= {min_members:UInt32}
ORDER BY members DESC, lat, lon
LIMIT {limit:UInt32}
""", {"cell_deg": 0.02, "min_members": 3, "limit": 3000}))

_q(NamedQuery(
    "station_daily_litres",
    "Litres sold per day and product at one station, all customers (the actuals under a demand forecast). "
    "fact_station_sales is station x product x day sized and sorted by station: a primary-key range read.",
    """
SELECT date, product, sum(litres) AS litres, sum(transactions) AS transactions
FROM fact_station_sales FINAL
WHERE station_id = {station_id:String} AND date >= {date_from:Date} AND date <= {date_to:Date}
GROUP BY date, product
ORDER BY date, product
""", {**_RANGE, "station_id": ""}))

_q(NamedQuery(
    "risk_kpis_daily",
    "Risk decisions per day: total, by outcome, review rate, degraded share, mean score (rollup).",
    """
SELECT date,
       sum(decisions) AS decided,
       sumIf(decisions, outcome = 'approve') AS approved,
       sumIf(decisions, outcome = 'review') AS reviewed,
       sumIf(decisions, outcome = 'decline') AS declined,
       sumIf(decisions, outcome = 'review') / sum(decisions) AS review_rate,
       sum(degraded_count) / sum(decisions) AS degraded_rate,
       sum(score_sum) / sum(decisions) AS mean_score,
       sum(latency_ms_sum) / sum(decisions) AS mean_latency_ms
FROM rollup_risk_daily
WHERE date >= {date_from:Date} AND date <= {date_to:Date}
GROUP BY date
ORDER BY date
""", _RANGE))

_q(NamedQuery(
    "risk_decisions_by_outcome",
    "Decisions by outcome and model/rule-set version in a date range (rollup).",
    """
SELECT outcome, model_version, ruleset_version, sum(decisions) AS decisions, sum(degraded_count) AS degraded
FROM rollup_risk_daily
WHERE date >= {date_from:Date} AND date <= {date_to:Date}
GROUP BY outcome, model_version, ruleset_version
ORDER BY decisions DESC
""", _RANGE))

_q(NamedQuery(
    "risk_false_positives",
    "Once labels are known: flagged (review/decline) vs fraud per day - false-positive rate, precision, recall.",
    """
SELECT date,
       count() AS decisions,
       sum(flagged) AS flagged_count,
       sum(fraud) AS fraud_count,
       sum(flagged AND NOT fraud) AS false_positives,
       sum(flagged AND fraud) AS true_positives,
       sum(flagged AND NOT fraud) / greatest(count() - sum(fraud), 1) AS false_positive_rate,
       sum(flagged AND fraud) / greatest(sum(flagged), 1) AS precision,
       sum(flagged AND fraud) / greatest(sum(fraud), 1) AS recall
FROM (
    SELECT date, toUInt8(outcome != 'approve') AS flagged,
           toUInt8(tx_id IN (
               SELECT tx_id FROM fact_transactions FINAL
               WHERE date >= {date_from:Date} AND date <= {date_to:Date} AND is_fraud = 1
           )) AS fraud
    FROM fact_risk_decisions FINAL
    WHERE date >= {date_from:Date} AND date <= {date_to:Date}
)
GROUP BY date
ORDER BY date
""", _RANGE, dashboard=False))

_q(NamedQuery(
    "fraud_by_scenario",
    "Labelled fraud by scenario: purchases and fen (base fact, FINAL).",
    """
SELECT scenario, count() AS transactions, sum(amount_fen) AS amount_fen, uniqExact(card_id) AS cards
FROM fact_transactions FINAL
WHERE date >= {date_from:Date} AND date <= {date_to:Date} AND is_fraud = 1
GROUP BY scenario
ORDER BY transactions DESC
""", _RANGE, dashboard=False))

_q(NamedQuery(
    "points_daily",
    "Points issued / reversed / redeemed / expired per day (rollup).",
    """
SELECT date,
       sumIf(points_sum, kind = 'earn') AS issued,
       -sumIf(points_sum, kind = 'reverse') AS reversed,
       -sumIf(points_sum, kind = 'redeem') AS redeemed,
       -sumIf(points_sum, kind = 'expire') AS expired,
       sum(points_sum) AS net,
       sum(entries) AS entries
FROM rollup_points_daily
WHERE date >= {date_from:Date} AND date <= {date_to:Date}
GROUP BY date
ORDER BY date
""", _RANGE))

_q(NamedQuery(
    "member_activity_daily",
    "Active members and cards per day (approximate distinct counts), purchases and spend (rollup).",
    """
SELECT date, uniqHLL12Merge(members) AS active_members, uniqHLL12Merge(cards) AS active_cards,
       countMerge(purchases) AS purchases, sumMerge(spend_fen) AS spend_fen
FROM rollup_member_activity_daily
WHERE date >= {date_from:Date} AND date <= {date_to:Date}
GROUP BY date
ORDER BY date
""", _RANGE))

_q(NamedQuery(
    "tank_alerts",
    "Tank days where the measured closing level is below the expected one by more than a tolerance (leaks).",
    """
SELECT date, station_id, tank_id, product, closing_l, expected_closing_l,
       expected_closing_l - closing_l AS shortfall_l
FROM fact_tank_readings FINAL
WHERE date >= {date_from:Date} AND date <= {date_to:Date}
  AND expected_closing_l - closing_l > {tolerance_l:Float64}
ORDER BY shortfall_l DESC
LIMIT {limit:UInt32}
""", {**_RANGE, "tolerance_l": 200.0, "limit": 100}))

_q(NamedQuery(
    "price_gap",
    "Own price vs the mean competitor price per station and product in a date range (one JOIN).",
    """
SELECT o.station_id AS station_id, o.product AS product, o.own_price_fen AS own_price_fen,
       c.competitor_price_fen AS competitor_price_fen, o.own_price_fen - c.competitor_price_fen AS gap_fen
FROM (
    SELECT station_id, product, avg(price_fen) AS own_price_fen
    FROM fact_prices FINAL
    WHERE date >= {date_from:Date} AND date <= {date_to:Date}
    GROUP BY station_id, product
) AS o
ANY INNER JOIN (
    SELECT station_id, product, avg(price_fen) AS competitor_price_fen
    FROM fact_competitor_prices FINAL
    WHERE date >= {date_from:Date} AND date <= {date_to:Date}
    GROUP BY station_id, product
) AS c USING (station_id, product)
ORDER BY station_id, product
""", _RANGE))

_q(NamedQuery(
    "fleet_vehicle_costs",
    "Per-vehicle spend, litres and purchases of one fleet account (base fact FINAL joined to cards).",
    """
SELECT c.vehicle_id AS vehicle_id, count() AS purchases, sum(t.litres) AS litres, sum(t.amount_fen) AS amount_fen
FROM (
    SELECT card_id, litres, amount_fen FROM fact_transactions FINAL
    WHERE date >= {date_from:Date} AND date <= {date_to:Date} AND status = 'captured'
) AS t
ANY INNER JOIN (SELECT card_id, vehicle_id FROM dim_card FINAL WHERE fleet_id = {fleet_id:String}) AS c
USING card_id
GROUP BY vehicle_id
ORDER BY amount_fen DESC
""", _RANGE, dashboard=False))

_q(NamedQuery(
    "member_profile",
    "Display profile of one member: PII only masked (never decrypted here).",
    """
SELECT member_id, tier, joined, family_id, is_family_main, churned, complaints,
       id_number_masked AS id_number, phone_masked AS phone
FROM dim_member FINAL
WHERE member_id = {member_id:String}
""", dashboard=False))

_q(NamedQuery(
    "warehouse_freshness",
    "Latest event time and row count of the main facts (monitoring).",
    """
SELECT 'fact_transactions' AS fact, max(ts) AS latest, count() AS rows FROM fact_transactions
UNION ALL
SELECT 'fact_risk_decisions' AS fact, max(ts) AS latest, count() AS rows FROM fact_risk_decisions
UNION ALL
SELECT 'fact_points_ledger' AS fact, max(ts) AS latest, count() AS rows FROM fact_points_ledger
""", dashboard=False))

# ---------------------------------------------------------------- modern-only (chdb / ClickHouse >= 21)
_q(NamedQuery(
    "sales_7d_moving_avg",
    "Daily net sales with a 7-day moving average per product (window function).",
    """
SELECT date, product, net_fen,
       avg(net_fen) OVER (PARTITION BY product ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS net_fen_7d
FROM (
    SELECT date, product, sum(captured_fen - refunded_fen) AS net_fen
    FROM rollup_sales_daily
    WHERE date >= {date_from:Date} AND date <= {date_to:Date}
    GROUP BY date, product
)
ORDER BY product, date
""", _RANGE, modern_only="window functions"))

_q(NamedQuery(
    "station_rank_by_region",
    "Stations ranked inside their region by net sales (CTE + window function).",
    """
WITH station_sales AS (
    SELECT station_id, sum(captured_fen - refunded_fen) AS net_fen
    FROM rollup_sales_daily
    WHERE date >= {date_from:Date} AND date <= {date_to:Date}
    GROUP BY station_id
)
SELECT s.region AS region, x.station_id AS station_id, x.net_fen AS net_fen,
       rank() OVER (PARTITION BY s.region ORDER BY x.net_fen DESC) AS rank_in_region
FROM station_sales AS x
INNER JOIN (SELECT station_id, region FROM dim_station FINAL) AS s ON s.station_id = x.station_id
ORDER BY region, rank_in_region
""", _RANGE, modern_only="CTEs and window functions"))


def get_query(name: str) -> NamedQuery:
    """The named query ``name`` (ParamError listing the known names otherwise)."""
    try:
        return QUERIES[name]
    except KeyError:
        raise ParamError(f"unknown query {name!r}; known: {', '.join(sorted(QUERIES))}") from None


def dashboard_queries() -> list[NamedQuery]:
    """The portable queries the dashboards poll (the benchmark's target applies to these)."""
    return [q for q in QUERIES.values() if q.dashboard and not q.modern_only]


def report_queries() -> list[NamedQuery]:
    """Portable reports and drill-downs over the base facts (timed separately by the benchmark)."""
    return [q for q in QUERIES.values() if not q.dashboard and not q.modern_only]

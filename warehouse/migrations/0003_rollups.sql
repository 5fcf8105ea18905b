-- Materialized-view rollups for the dashboards. Each MV fires on insert into its source fact; inserts into
-- those facts are idempotent (Warehouse.insert_df drops rows already stored with an equal or higher version),
-- so a redelivered event never reaches a rollup twice. Rollup reads always re-aggregate (sum/…Merge) and
-- never rely on background merges having happened.
-- Portability (server 18.16): MV selects read the source table directly (no subquery) and no output alias
-- reuses a source column name.

-- Sales per station x product x hour. A purchase contributes once when it reaches a terminal state
-- (version 2: captured/cancelled/timeout) and once more if it is refunded (version 3).
CREATE TABLE IF NOT EXISTS rollup_sales_hourly (
    hour DateTime('UTC'),
    station_id String,
    product String,
    transactions UInt64,
    captured UInt64,
    cancelled UInt64,
    timeouts UInt64,
    refunds UInt64,
    litres_sum Float64,
    captured_fen Int64,
    refunded_fen Int64,
    fraud UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (station_id, hour, product);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_sales_hourly TO rollup_sales_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    station_id,
    product,
    toUInt64(sum(version = 2)) AS transactions,
    toUInt64(sum(status = 'captured')) AS captured,
    toUInt64(sum(status = 'cancelled')) AS cancelled,
    toUInt64(sum(status = 'timeout')) AS timeouts,
    toUInt64(sum(status = 'refunded')) AS refunds,
    sum(if(status = 'captured', litres, 0.)) AS litres_sum,
    toInt64(sum(if(status = 'captured', amount_fen, 0))) AS captured_fen,
    toInt64(sum(if(status = 'refunded', amount_fen, 0))) AS refunded_fen,
    toUInt64(sum(version = 2 AND is_fraud = 1)) AS fraud
FROM fact_transactions
GROUP BY hour, station_id, product;

CREATE TABLE IF NOT EXISTS rollup_sales_daily (
    date Date,
    station_id String,
    product String,
    transactions UInt64,
    captured UInt64,
    cancelled UInt64,
    timeouts UInt64,
    refunds UInt64,
    litres_sum Float64,
    captured_fen Int64,
    refunded_fen Int64,
    fraud UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, station_id, product);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_sales_daily TO rollup_sales_daily AS
SELECT
    date,
    station_id,
    product,
    toUInt64(sum(version = 2)) AS transactions,
    toUInt64(sum(status = 'captured')) AS captured,
    toUInt64(sum(status = 'cancelled')) AS cancelled,
    toUInt64(sum(status = 'timeout')) AS timeouts,
    toUInt64(sum(status = 'refunded')) AS refunds,
    sum(if(status = 'captured', litres, 0.)) AS litres_sum,
    toInt64(sum(if(status = 'captured', amount_fen, 0))) AS captured_fen,
    toInt64(sum(if(status = 'refunded', amount_fen, 0))) AS refunded_fen,
    toUInt64(sum(version = 2 AND is_fraud = 1)) AS fraud
FROM fact_transactions
GROUP BY date, station_id, product;

-- Member activity per day: distinct active members and cards (HyperLogLog-12 states: small, fast to merge,
-- ~1.6% error), purchases, spend.
CREATE TABLE IF NOT EXISTS rollup_member_activity_daily (
    date Date,
    region String,
    members AggregateFunction(uniqHLL12, String),
    cards AggregateFunction(uniqHLL12, String),
    purchases AggregateFunction(count),
    spend_fen AggregateFunction(sum, Int64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, region);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_member_activity_daily TO rollup_member_activity_daily AS
SELECT
    date,
    region,
    uniqHLL12State(member_id) AS members,
    uniqHLL12State(card_id) AS cards,
    countState() AS purchases,
    sumState(amount_fen) AS spend_fen
FROM fact_transactions
WHERE status = 'captured'
GROUP BY date, region;

-- Risk KPIs: decisions by outcome per day, model and rule-set version.
CREATE TABLE IF NOT EXISTS rollup_risk_daily (
    date Date,
    outcome String,
    model_version String,
    ruleset_version String,
    decisions UInt64,
    degraded_count UInt64,
    score_sum Float64,
    latency_ms_sum Float64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, outcome, model_version, ruleset_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_risk_daily TO rollup_risk_daily AS
SELECT
    date,
    outcome,
    model_version,
    ruleset_version,
    toUInt64(count()) AS decisions,
    toUInt64(sum(degraded)) AS degraded_count,
    sum(score) AS score_sum,
    sum(latency_ms) AS latency_ms_sum
FROM fact_risk_decisions
GROUP BY date, outcome, model_version, ruleset_version;

-- Points issued / reversed / redeemed / expired per day.
CREATE TABLE IF NOT EXISTS rollup_points_daily (
    date Date,
    kind String,
    entries UInt64,
    points_sum Int64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_points_daily TO rollup_points_daily AS
SELECT
    date,
    kind,
    toUInt64(count()) AS entries,
    toInt64(sum(points)) AS points_sum
FROM fact_points_ledger
GROUP BY date, kind;

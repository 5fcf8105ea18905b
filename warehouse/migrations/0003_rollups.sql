-- Materialized-view rollups for the dashboards. Each MV fires on insert into its source fact; inserts into
-- those facts are idempotent (Warehouse.insert_df drops rows already stored with an equal or higher version),
-- so a redelivered event never reaches a rollup twice. Rollup reads always re-aggregate (sum/…Merge) and
-- never rely on background merges having happened.

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
    litres Float64,
    amount_fen Int64,
    refund_fen Int64,
    fraud UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, station_id, product);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_sales_hourly TO rollup_sales_hourly AS
SELECT
    toStartOfHour(s_ts) AS hour,
    s_station AS station_id,
    s_product AS product,
    toUInt64(sum(s_version = 2)) AS transactions,
    toUInt64(sum(s_status = 'captured')) AS captured,
    toUInt64(sum(s_status = 'cancelled')) AS cancelled,
    toUInt64(sum(s_status = 'timeout')) AS timeouts,
    toUInt64(sum(s_status = 'refunded')) AS refunds,
    sum(if(s_status = 'captured', s_litres, 0.)) AS litres,
    toInt64(sum(if(s_status = 'captured', s_amount, 0))) AS amount_fen,
    toInt64(sum(if(s_status = 'refunded', s_amount, 0))) AS refund_fen,
    toUInt64(sum(s_version = 2 AND s_fraud = 1)) AS fraud
FROM (
    SELECT ts AS s_ts, station_id AS s_station, product AS s_product, version AS s_version, status AS s_status,
           litres AS s_litres, amount_fen AS s_amount, is_fraud AS s_fraud
    FROM fact_transactions
)
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
    litres Float64,
    amount_fen Int64,
    refund_fen Int64,
    fraud UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, station_id, product);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_sales_daily TO rollup_sales_daily AS
SELECT
    toDate(s_ts) AS date,
    s_station AS station_id,
    s_product AS product,
    toUInt64(sum(s_version = 2)) AS transactions,
    toUInt64(sum(s_status = 'captured')) AS captured,
    toUInt64(sum(s_status = 'cancelled')) AS cancelled,
    toUInt64(sum(s_status = 'timeout')) AS timeouts,
    toUInt64(sum(s_status = 'refunded')) AS refunds,
    sum(if(s_status = 'captured', s_litres, 0.)) AS litres,
    toInt64(sum(if(s_status = 'captured', s_amount, 0))) AS amount_fen,
    toInt64(sum(if(s_status = 'refunded', s_amount, 0))) AS refund_fen,
    toUInt64(sum(s_version = 2 AND s_fraud = 1)) AS fraud
FROM (
    SELECT ts AS s_ts, station_id AS s_station, product AS s_product, version AS s_version, status AS s_status,
           litres AS s_litres, amount_fen AS s_amount, is_fraud AS s_fraud
    FROM fact_transactions
)
GROUP BY date, station_id, product;

-- Member activity per day: distinct active members and cards (HyperLogLog states), purchases, spend.
CREATE TABLE IF NOT EXISTS rollup_member_activity_daily (
    date Date,
    region String,
    members AggregateFunction(uniq, String),
    cards AggregateFunction(uniq, String),
    purchases AggregateFunction(count),
    amount_fen AggregateFunction(sum, Int64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, region);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_member_activity_daily TO rollup_member_activity_daily AS
SELECT
    toDate(s_ts) AS date,
    s_region AS region,
    uniqState(s_member) AS members,
    uniqState(s_card) AS cards,
    countState() AS purchases,
    sumState(s_amount) AS amount_fen
FROM (
    SELECT ts AS s_ts, region AS s_region, member_id AS s_member, card_id AS s_card, toInt64(amount_fen) AS s_amount
    FROM fact_transactions
    WHERE status = 'captured'
)
GROUP BY date, region;

-- Risk KPIs: decisions by outcome per day, model and rule-set version.
CREATE TABLE IF NOT EXISTS rollup_risk_daily (
    date Date,
    outcome String,
    model_version String,
    ruleset_version String,
    decisions UInt64,
    degraded UInt64,
    score_sum Float64,
    latency_ms_sum Float64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, outcome, model_version, ruleset_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_risk_daily TO rollup_risk_daily AS
SELECT
    toDate(s_ts) AS date,
    s_outcome AS outcome,
    s_model AS model_version,
    s_ruleset AS ruleset_version,
    toUInt64(count()) AS decisions,
    toUInt64(sum(s_degraded)) AS degraded,
    sum(s_score) AS score_sum,
    sum(s_latency) AS latency_ms_sum
FROM (
    SELECT ts AS s_ts, outcome AS s_outcome, model_version AS s_model, ruleset_version AS s_ruleset,
           degraded AS s_degraded, score AS s_score, latency_ms AS s_latency
    FROM fact_risk_decisions
)
GROUP BY date, outcome, model_version, ruleset_version;

-- Points issued / reversed / redeemed / expired per day.
CREATE TABLE IF NOT EXISTS rollup_points_daily (
    date Date,
    kind String,
    entries UInt64,
    points Int64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_points_daily TO rollup_points_daily AS
SELECT
    toDate(s_ts) AS date,
    s_kind AS kind,
    toUInt64(count()) AS entries,
    toInt64(sum(s_points)) AS points
FROM (SELECT ts AS s_ts, kind AS s_kind, points AS s_points FROM fact_points_ledger)
GROUP BY date, kind;

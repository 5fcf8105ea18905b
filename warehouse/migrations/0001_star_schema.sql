-- Star schema: dimensions and facts. Same DDL on chdb (ClickHouse 26.x) and server 18.16.
-- Every table is a ReplacingMergeTree keyed (ORDER BY) by its natural/event id, so a replayed or redelivered
-- row collapses to one; reads that must be exact use FINAL (or argMax) on the base tables.
-- Money is integer fen (Int64); timestamps are DateTime('UTC') (18.16 has no DateTime64).

-- ---------------------------------------------------------------- dimensions
CREATE TABLE IF NOT EXISTS dim_date (
    date Date,
    year UInt16 DEFAULT toYear(date),
    month UInt8 DEFAULT toMonth(date),
    day UInt8 DEFAULT toDayOfMonth(date),
    weekday UInt8,
    is_holiday UInt8,
    is_workday UInt8,
    holiday_name String
) ENGINE = ReplacingMergeTree() ORDER BY date;

CREATE TABLE IF NOT EXISTS dim_product (
    product String,
    name String,
    category String,
    is_fuel UInt8
) ENGINE = ReplacingMergeTree() ORDER BY product;

CREATE TABLE IF NOT EXISTS dim_station (
    station_id String,
    name String,
    region String,
    city String,
    station_type String,
    lat Float64,
    lon Float64,
    nozzles_92 UInt16,
    nozzles_95 UInt16,
    nozzles_98 UInt16,
    nozzles_diesel UInt16,
    has_shop UInt8,
    has_wash UInt8,
    competitors_3km UInt16,
    land_cost_index Float64,
    opened Date,
    updated_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY station_id;

-- Card numbers are never stored: card_id is the keyed-HMAC token (fuelcard.privacy.tokenize_pan).
CREATE TABLE IF NOT EXISTS dim_card (
    card_id String,
    card_type String,
    member_id String,
    main_card_id String,
    fleet_id String,
    vehicle_id String,
    per_tx_limit_fen Int64,
    monthly_limit_fen Int64,
    issued Date,
    device_id String,
    updated_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY card_id;

-- id_number/phone only SM4-encrypted (base64 iv||ciphertext) plus their display masks.
CREATE TABLE IF NOT EXISTS dim_member (
    member_id String,
    tier String,
    joined Date,
    home_lat Float64,
    home_lon Float64,
    work_lat Float64,
    work_lon Float64,
    family_id String,
    is_family_main UInt8,
    fills_per_week Float64,
    price_sensitivity Float64,
    complaints UInt32,
    churned UInt8,
    churn_date Nullable(Date),
    id_number_enc String,
    phone_enc String,
    id_number_masked String,
    phone_masked String,
    region String,
    opening_points Int64,
    points_expire_date Nullable(Date),
    updated_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY member_id;

CREATE TABLE IF NOT EXISTS dim_vehicle (
    vehicle_id String,
    member_id String,
    fleet_id String,
    plate String,
    tank_capacity_l Float64,
    fuel_type String,
    updated_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY vehicle_id;

CREATE TABLE IF NOT EXISTS dim_fleet (
    fleet_id String,
    name String,
    region String,
    home_lat Float64,
    home_lon Float64,
    geofence_radius_km Float64,
    allowed_products String,
    per_tx_limit_fen Int64,
    daily_limit_fen Int64,
    monthly_limit_fen Int64,
    member_id String,
    updated_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY fleet_id;

-- Supplementary dimensions (replenishment, site selection).
CREATE TABLE IF NOT EXISTS dim_tank (
    tank_id String,
    station_id String,
    product String,
    capacity_l Float64,
    lead_time_days Float64
) ENGINE = ReplacingMergeTree() ORDER BY tank_id;

CREATE TABLE IF NOT EXISTS dim_competitor (
    competitor_id String,
    brand String,
    lat Float64,
    lon Float64,
    station_id String,
    distance_km Float64
) ENGINE = ReplacingMergeTree() ORDER BY competitor_id;

-- ---------------------------------------------------------------- facts
-- Transactions: an accumulating snapshot, one row per purchase (tx_id) whose state moves through
-- version 1 = authorised, 2 = captured / cancelled / timeout, 3 = refunded. The highest version wins.
CREATE TABLE IF NOT EXISTS fact_transactions (
    tx_id String,
    version UInt8,
    status String,
    ts DateTime('UTC'),
    date Date DEFAULT toDate(ts),
    capture_ts Nullable(DateTime('UTC')),
    card_id String,
    member_id String,
    station_id String,
    terminal_id String,
    device_id String,
    region String,
    product String,
    litres Float64,
    unit_price_fen Int64,
    amount_fen Int64,
    lat Float64,
    lon Float64,
    is_fraud UInt8,
    scenario String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(date)
ORDER BY (date, station_id, tx_id);

CREATE TABLE IF NOT EXISTS fact_recharges (
    recharge_id String,
    ts DateTime('UTC'),
    date Date DEFAULT toDate(ts),
    card_id String,
    amount_fen Int64,
    batch_id String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, recharge_id);

-- Risk decisions: one per decision_id (normally the tx_id); a re-score with a higher version replaces it.
CREATE TABLE IF NOT EXISTS fact_risk_decisions (
    decision_id String,
    version UInt64,
    tx_id String,
    card_id String,
    station_id String,
    ts DateTime('UTC'),
    date Date DEFAULT toDate(ts),
    outcome String,
    score Float64,
    reasons String,
    top_features String,
    model_version String,
    ruleset_version String,
    degraded UInt8,
    latency_ms Float64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(date)
ORDER BY (date, decision_id);

-- Points ledger: signed movements (earn > 0, reverse/redeem/expire < 0), one row per entry_id.
CREATE TABLE IF NOT EXISTS fact_points_ledger (
    entry_id String,
    ts DateTime('UTC'),
    date Date DEFAULT toDate(ts),
    member_id String,
    card_id String,
    tx_id String,
    kind String,
    points Int64,
    note String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (date, entry_id);

CREATE TABLE IF NOT EXISTS fact_tank_readings (
    date Date,
    tank_id String,
    station_id String,
    product String,
    opening_l Float64,
    sales_l Float64,
    delivery_l Float64,
    closing_l Float64,
    expected_closing_l Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (station_id, tank_id, date);

CREATE TABLE IF NOT EXISTS fact_prices (
    date Date,
    station_id String,
    product String,
    price_fen Int64,
    cost_fen Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (station_id, product, date);

CREATE TABLE IF NOT EXISTS fact_competitor_prices (
    date Date,
    competitor_id String,
    station_id String,
    product String,
    price_fen Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (station_id, competitor_id, product, date);

CREATE TABLE IF NOT EXISTS fact_crude_prices (
    date Date,
    usd_per_bbl Float64
) ENGINE = ReplacingMergeTree() ORDER BY date;

-- Supplementary facts the batch models read (demand, churn).
CREATE TABLE IF NOT EXISTS fact_station_sales (
    date Date,
    station_id String,
    product String,
    litres Float64,
    transactions UInt32,
    card_litres Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (station_id, product, date);

CREATE TABLE IF NOT EXISTS fact_station_hourly (
    ts_hour DateTime('UTC'),
    station_id String,
    litres Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts_hour)
ORDER BY (station_id, ts_hour);

CREATE TABLE IF NOT EXISTS fact_weather (
    date Date,
    region String,
    temp_c Float64,
    rain_mm Float64
) ENGINE = ReplacingMergeTree() ORDER BY (region, date);

CREATE TABLE IF NOT EXISTS fact_complaints (
    complaint_id String,
    ts DateTime('UTC'),
    member_id String,
    category String
) ENGINE = ReplacingMergeTree() ORDER BY complaint_id;

-- Audit trail of reads of protected data (who read what, when).
CREATE TABLE IF NOT EXISTS audit_log (
    ts DateTime('UTC'),
    actor String,
    action String,
    subject String,
    detail String
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (ts, actor);

-- tds:no-transaction
-- Readings on TimescaleDB (seed, layer 4): hypertable with 1-day chunks, the seed's indexes, continuous
-- aggregates hourly and monthly with refresh policies, compression after 7 days, retention 2 years.
-- Continuous aggregates cannot be created inside a transaction, hence no-transaction; every statement is
-- idempotent so that a run interrupted half-way can simply be repeated.
-- The plain-PostgreSQL file with the same version exposes the same relations and columns.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS tds_storage_settings (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    retention        interval NOT NULL DEFAULT '730 days' CHECK (retention > interval '0'),
    partitions_ahead integer NOT NULL DEFAULT 7 CHECK (partitions_ahead BETWEEN 0 AND 366)
);
INSERT INTO tds_storage_settings DEFAULT VALUES ON CONFLICT (id) DO NOTHING;

-- No foreign keys: see the plain-PostgreSQL file (hot path; ids come from the registry cache).
CREATE TABLE IF NOT EXISTS readings (
    time       timestamptz NOT NULL,
    device_id  bigint NOT NULL,
    gateway_id bigint NOT NULL,
    tenant_id  bigint NOT NULL,
    value      double precision NOT NULL
);

SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE);

-- The seed's three indexes. The (device, time DESC) one is also the unique key that makes redelivery
-- idempotent (ON CONFLICT (device_id, time) infers it whatever its sort order).
CREATE UNIQUE INDEX IF NOT EXISTS readings_device_time_idx ON readings (device_id, time DESC);
CREATE INDEX IF NOT EXISTS readings_tenant_time_idx ON readings (tenant_id, time DESC);
CREATE INDEX IF NOT EXISTS readings_gateway_time_idx ON readings (gateway_id, time DESC);

-- materialized_only: both backends show rollups as of the last refresh (the plain one has no real-time
-- union), so the same query answers the same on both.
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket,
       tenant_id,
       gateway_id,
       device_id,
       sum(value)   AS sum_value,
       avg(value)   AS avg_value,
       min(value)   AS min_value,
       max(value)   AS max_value,
       count(*)     AS reading_count
FROM readings
GROUP BY bucket, tenant_id, gateway_id, device_id
WITH NO DATA;

-- The seed's monthly aggregate. Days are counted in UTC: DATE(time) would depend on the session's time
-- zone (TimescaleDB warns about it); (time AT TIME ZONE 'UTC')::date does not.
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_monthly
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 month', time) AS bucket,
       tenant_id,
       gateway_id,
       device_id,
       sum(value)   AS sum_value,
       avg(value)   AS avg_value,
       min(value)   AS min_value,
       max(value)   AS max_value,
       count(*)     AS reading_count,
       count(DISTINCT (time AT TIME ZONE 'UTC')::date) AS days_with_readings
FROM readings
GROUP BY bucket, tenant_id, gateway_id, device_id
WITH NO DATA;

CREATE INDEX IF NOT EXISTS readings_hourly_tenant_idx ON readings_hourly (tenant_id, bucket);
CREATE INDEX IF NOT EXISTS readings_monthly_tenant_idx ON readings_monthly (tenant_id, bucket);

-- Refresh windows stay inside the retention period (refreshing over dropped chunks would erase the
-- aggregated buckets: FIELD-NOTES). A monthly policy needs a window of at least two buckets.
-- apply_retention() re-creates these when the retention changes.
SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('readings_monthly',
    start_offset => INTERVAL '3 months', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '1 hour', if_not_exists => TRUE);

-- Compression after 7 days: one segment per device, newest first (the dashboards' order).
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days', if_not_exists => TRUE);

SELECT add_retention_policy('readings', drop_after => INTERVAL '730 days', if_not_exists => TRUE);

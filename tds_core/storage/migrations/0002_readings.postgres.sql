-- Readings on plain PostgreSQL: daily range partitions, rollup tables kept by the core, retention by
-- dropping whole partitions. The TimescaleDB file with the same version builds the equivalent there;
-- both expose `readings`, `readings_hourly` and `readings_monthly` with the same columns, so one query
-- interface serves both (tds_core/storage/queries.py).

-- Storage settings (one row): maintenance reads them, `tds db migrate --retention` writes them.
CREATE TABLE tds_storage_settings (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    retention        interval NOT NULL DEFAULT '730 days' CHECK (retention > interval '0'),
    partitions_ahead integer NOT NULL DEFAULT 7 CHECK (partitions_ahead BETWEEN 0 AND 366)
);
INSERT INTO tds_storage_settings DEFAULT VALUES;

-- No foreign keys to devices/gateways/tenants: on the hot path they would cost a lookup per row, and the
-- consumer only writes ids it just resolved from the registry. tenant_id is stored (not derived through
-- the device) so that a device moved to another tenant keeps its history with the tenant that owned it.
-- No default partition: the writer creates a missing day before inserting (a default partition would
-- have to be scanned and split whenever the day's real partition is created later).
CREATE TABLE readings (
    time       timestamptz NOT NULL,
    device_id  bigint NOT NULL,
    gateway_id bigint NOT NULL,
    tenant_id  bigint NOT NULL,
    value      double precision NOT NULL
) PARTITION BY RANGE (time);

-- The one index on raw rows: it makes redelivery idempotent (ON CONFLICT DO NOTHING) and serves
-- per-device time ranges (the seed's (device, time DESC) index). Tenant and gateway queries read the
-- rollups, so the seed's other two indexes are not built here (each costs insert throughput; see
-- bench/bench_writer.py).
CREATE UNIQUE INDEX readings_device_time_idx ON readings (device_id, time DESC);

-- Rollups. Buckets are UTC: hour, day, month. avg = sum / count so that it can be recombined exactly.
CREATE TABLE readings_hourly (
    bucket        timestamptz NOT NULL,
    tenant_id     bigint NOT NULL,
    gateway_id    bigint NOT NULL,
    device_id     bigint NOT NULL,
    sum_value     double precision NOT NULL,
    avg_value     double precision NOT NULL,
    min_value     double precision NOT NULL,
    max_value     double precision NOT NULL,
    reading_count bigint NOT NULL,
    PRIMARY KEY (device_id, bucket, tenant_id, gateway_id)
);
CREATE INDEX readings_hourly_tenant_idx ON readings_hourly (tenant_id, bucket);

CREATE TABLE readings_daily (
    bucket        date NOT NULL,
    tenant_id     bigint NOT NULL,
    gateway_id    bigint NOT NULL,
    device_id     bigint NOT NULL,
    sum_value     double precision NOT NULL,
    min_value     double precision NOT NULL,
    max_value     double precision NOT NULL,
    reading_count bigint NOT NULL,
    PRIMARY KEY (device_id, bucket, tenant_id, gateway_id)
);

-- Monthly from daily: "days with readings" is the number of daily rows, exact however late rows arrive.
CREATE TABLE readings_monthly (
    bucket             timestamptz NOT NULL,
    tenant_id          bigint NOT NULL,
    gateway_id         bigint NOT NULL,
    device_id          bigint NOT NULL,
    sum_value          double precision NOT NULL,
    avg_value          double precision NOT NULL,
    min_value          double precision NOT NULL,
    max_value          double precision NOT NULL,
    reading_count      bigint NOT NULL,
    days_with_readings bigint NOT NULL,
    PRIMARY KEY (device_id, bucket, tenant_id, gateway_id)
);
CREATE INDEX readings_monthly_tenant_idx ON readings_monthly (tenant_id, bucket);

-- Invalidation log (the role of TimescaleDB's): the writer appends (device, hour) for the rows it
-- actually inserted, in the same transaction; the refresher re-aggregates only those buckets from the
-- raw rows and deletes the entries it consumed. Append-only without an index keeps the hot path lean.
CREATE TABLE readings_dirty (
    device_id bigint NOT NULL,
    bucket    timestamptz NOT NULL
);

-- Rollup deltas (plain PostgreSQL). Re-aggregating a dirty hour from its raw rows costs the hour's rows so
-- far, and the refresher runs every 30 s: at 40k readings/s that grew by ~1 s per refresh (0.9, 1.7, 3.1 s
-- in the first 1.5 minutes of an hour; bench measurement in the commit) until it could not keep up. The
-- writer now also logs, per (device, hour, gateway, tenant), the sum/min/max/count of the rows it actually
-- inserted, in the same transaction as those rows; the refresher folds them into the hourly rows, so its
-- cost follows the new rows only. An entry without figures (reading_count IS NULL: logged before this
-- migration, or written by hand to force a rebuild) makes the refresher recompute that bucket from the raw
-- rows as before.
ALTER TABLE readings_dirty
    ADD COLUMN gateway_id    bigint,
    ADD COLUMN tenant_id     bigint,
    ADD COLUMN sum_value     double precision,
    ADD COLUMN min_value     double precision,
    ADD COLUMN max_value     double precision,
    ADD COLUMN reading_count bigint;

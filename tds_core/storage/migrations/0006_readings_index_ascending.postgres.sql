-- The unique (device, time) index in ascending order instead of the seed's (device, time DESC)
-- (plain PostgreSQL). Readings of a device arrive in time order, so each insert lands at the right end
-- of its device's key range. B-tree page splits pack the left page full for such ascending runs but
-- split 50/50 when the keys run descending. Measured with 2.4 M rows, 1,600 devices, one row each per
-- batch: index 95 MiB against 126 MiB (41.5 against 54.9 bytes per row), and 6 % less WAL per row, at
-- the same insert rate. Queries for a device's latest readings scan it backwards just as fast. The
-- TimescaleDB schema keeps the seed's indexes: that path cannot be measured here.
--
-- Rebuilds the index of every existing partition while holding readings locked: on a large database,
-- run `tds db migrate` in a maintenance window.
DROP INDEX readings_device_time_idx;
CREATE UNIQUE INDEX readings_device_time_idx ON readings (device_id, time);

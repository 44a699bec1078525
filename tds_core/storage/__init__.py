"""Storage: migrations, the batch writer, rollups, retention and queries.

TimescaleDB (hypertable, continuous aggregates, compression, retention policy) when the server has it;
plain PostgreSQL (daily range partitions, rollup tables kept by the core, retention by dropping partitions)
when not, behind one interface.
"""

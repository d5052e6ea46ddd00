-- Hierarchical rollups: plain PostgreSQL only (see
-- 0010_hierarchical_rollups.postgres.sql, which makes stackvps_refresh_rollup
-- compute readings_1h from readings_1m and readings_1d from readings_1h or
-- readings_1m). On TimescaleDB nothing changes: readings_1m, readings_1h and
-- readings_1d stay continuous aggregates over readings, each refreshed by
-- refresh_continuous_aggregate from the raw chunks, and a rollup_invalidations
-- row naming one rollup refreshes that rollup alone. This file exists because
-- every migration has a file per mode; it changes nothing.
SELECT 1;

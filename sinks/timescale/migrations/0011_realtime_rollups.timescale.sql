-- Real-time rollups: plain PostgreSQL only (see
-- 0011_realtime_rollups.postgres.sql, which makes readings_1m, readings_1h
-- and readings_1d views over materialized tables and live aggregation
-- beyond a watermark). On TimescaleDB the continuous aggregates already
-- work so (materialized_only = false, migration 0005) and nothing changes.
-- This file exists because every migration has a file per mode.
SELECT 1;

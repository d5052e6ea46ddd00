-- stackvps:no-transaction
-- Rollups readings_1m, readings_1h, readings_1d on TimescaleDB: continuous
-- aggregates with real-time aggregation on (materialized_only = false), so
-- what is not materialized yet is computed from readings at query time. The
-- sink's rollup refresher refreshes exactly the buckets committed batches
-- touched (CALL refresh_continuous_aggregate); the refresh policies that
-- `stackvps run` adds are only a safety net. Safe to re-run.

-- rollup_settings holds what the refresh needs beyond readings, one row.
-- day_timezone is the zone readings_1d buckets local days in; the sink
-- writes it from rollups.day_timezone at start and recreates readings_1d
-- when it changes. raw_dropped_before is only used on plain PostgreSQL.
CREATE TABLE IF NOT EXISTS rollup_settings (
    id                 boolean     PRIMARY KEY DEFAULT true CHECK (id),
    day_timezone       text        NOT NULL DEFAULT 'America/Santiago',
    raw_dropped_before timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rollup_settings DEFAULT VALUES ON CONFLICT (id) DO NOTHING;
COMMENT ON TABLE rollup_settings IS 'Rollup settings: the zone of readings_1d days (from rollups.day_timezone) and how far raw retention has dropped readings.';

-- rollup_invalidations lists the time ranges [from_ts, to_ts) of readings
-- stored but not yet refreshed into the rollups. The sink writes one row per
-- batch in the batch's own transaction, and the refresher deletes the rows it
-- has refreshed, so a crash between the two loses no refresh.
CREATE TABLE IF NOT EXISTS rollup_invalidations (
    id         bigserial   PRIMARY KEY,
    rollup     text        CHECK (rollup IN ('1m', '1h', '1d')), -- NULL: all three
    from_ts    timestamptz NOT NULL,
    to_ts      timestamptz NOT NULL CHECK (to_ts > from_ts),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rollup_invalidations IS 'Time ranges of readings stored but not yet refreshed into readings_1m/_1h/_1d; written with each batch, deleted by the refresher.';

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT public.time_bucket(INTERVAL '1 minute', time) AS bucket, point, variable,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       public.last(value, time) AS last, count(*) AS count
FROM readings
GROUP BY 1, point, variable
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT public.time_bucket(INTERVAL '1 hour', time) AS bucket, point, variable,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       public.last(value, time) AS last, count(*) AS count
FROM readings
GROUP BY 1, point, variable
WITH NO DATA;

-- The zone here is the default of rollups.day_timezone; the sink recreates
-- the view in another zone when configured so.
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT public.time_bucket(INTERVAL '1 day', time, 'America/Santiago') AS bucket, point, variable,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       public.last(value, time) AS last, count(*) AS count
FROM readings
GROUP BY 1, point, variable
WITH NO DATA;

-- One row per (point, variable, bucket) by construction (GROUP BY);
-- continuous aggregates refuse UNIQUE indexes, so this one is plain.
CREATE INDEX IF NOT EXISTS readings_1m_point_idx ON readings_1m (point, variable, bucket DESC);
CREATE INDEX IF NOT EXISTS readings_1h_point_idx ON readings_1h (point, variable, bucket DESC);
CREATE INDEX IF NOT EXISTS readings_1d_point_idx ON readings_1d (point, variable, bucket DESC);

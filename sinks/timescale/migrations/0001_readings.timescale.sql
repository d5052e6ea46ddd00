-- readings: one row per (point, variable, time), in canonical units.
-- TimescaleDB path: a hypertable with 7-day chunks.
CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public;

CREATE TABLE readings (
    time     timestamptz      NOT NULL,
    point    text             NOT NULL,
    variable text             NOT NULL,
    value    double precision NOT NULL,
    quality  integer          NOT NULL DEFAULT 0,
    PRIMARY KEY (point, variable, time)
);
COMMENT ON TABLE readings IS 'One reading per point, variable and time, in canonical units (flow L/s, totalizer m3, level m). quality is a bit set of flags; 0 is good.';

-- create_hypertable also creates the (time DESC) index, readings_time_idx.
SELECT public.create_hypertable('readings', 'time', chunk_time_interval => INTERVAL '7 days');

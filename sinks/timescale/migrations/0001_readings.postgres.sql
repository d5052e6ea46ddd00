-- readings: one row per (point, variable, time), in canonical units.
-- Plain PostgreSQL path: declaratively partitioned by month on time, with a
-- default partition so no row is ever refused for lack of a partition.
CREATE TABLE readings (
    time     timestamptz      NOT NULL,
    point    text             NOT NULL,
    variable text             NOT NULL,
    value    double precision NOT NULL,
    quality  integer          NOT NULL DEFAULT 0,
    PRIMARY KEY (point, variable, time)
) PARTITION BY RANGE (time);
COMMENT ON TABLE readings IS 'One reading per point, variable and time, in canonical units (flow L/s, totalizer m3, level m). quality is a bit set of flags; 0 is good.';

CREATE TABLE readings_default PARTITION OF readings DEFAULT;
CREATE INDEX readings_time_idx ON readings (time DESC);

-- stackvps_ensure_readings_partitions creates the monthly partitions that
-- cover [from_ts, to_ts), moving any rows of those months out of the default
-- partition first. Safe to call repeatedly and concurrently (it locks the
-- parent while it attaches).
CREATE FUNCTION stackvps_ensure_readings_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    m       timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    nxt     timestamptz;
    part    text;
    created integer := 0;
BEGIN
    WHILE m < to_ts LOOP
        nxt  := (date_trunc('month', m AT TIME ZONE 'UTC') + INTERVAL '1 month') AT TIME ZONE 'UTC';
        part := format('readings_p%s', to_char(m AT TIME ZONE 'UTC', 'YYYYMM'));
        IF to_regclass(quote_ident(current_schema()) || '.' || part) IS NULL THEN
            LOCK TABLE readings IN SHARE ROW EXCLUSIVE MODE;
            IF to_regclass(quote_ident(current_schema()) || '.' || part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                EXECUTE format('WITH moved AS (DELETE FROM readings_default WHERE time >= %L AND time < %L RETURNING *)
                                INSERT INTO %I SELECT * FROM moved', m, nxt, part);
                EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, m, nxt);
                created := created + 1;
            END IF;
        END IF;
        m := nxt;
    END LOOP;
    RETURN created;
END $$;

SELECT stackvps_ensure_readings_partitions(now() - INTERVAL '1 month', now() + INTERVAL '3 months');

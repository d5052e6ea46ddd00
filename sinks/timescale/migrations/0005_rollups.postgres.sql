-- Rollups readings_1m, readings_1h, readings_1d on plain PostgreSQL: tables
-- with the same names and columns as the TimescaleDB continuous aggregates,
-- kept fresh incrementally by the sink's rollup refresher, which recomputes
-- only the buckets that committed batches touched (stackvps_refresh_rollup).

-- rollup_settings holds what the refresh needs beyond readings, one row.
-- day_timezone is the zone readings_1d buckets local days in; the sink
-- writes it from rollups.day_timezone at start and rebuilds readings_1d when
-- it changes. raw_dropped_before is set by raw retention: readings before it
-- may be gone, so buckets starting before it are never recomputed (that
-- would erase them).
CREATE TABLE rollup_settings (
    id                 boolean     PRIMARY KEY DEFAULT true CHECK (id),
    day_timezone       text        NOT NULL DEFAULT 'America/Santiago',
    raw_dropped_before timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rollup_settings DEFAULT VALUES;
COMMENT ON TABLE rollup_settings IS 'Rollup settings: the zone of readings_1d days (from rollups.day_timezone) and how far raw retention has dropped readings.';

-- rollup_invalidations lists the time ranges [from_ts, to_ts) of readings
-- stored but not yet folded into the rollups. The sink writes one row per
-- batch in the batch's own transaction, and the refresher deletes the rows it
-- has refreshed, so a crash between the two loses no refresh. Anything that
-- writes readings outside the sink (a bulk import) should insert a row too.
CREATE TABLE rollup_invalidations (
    id         bigserial   PRIMARY KEY,
    rollup     text        CHECK (rollup IN ('1m', '1h', '1d')), -- NULL: all three
    from_ts    timestamptz NOT NULL,
    to_ts      timestamptz NOT NULL CHECK (to_ts > from_ts),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rollup_invalidations IS 'Time ranges of readings stored but not yet refreshed into readings_1m/_1h/_1d; written with each batch, deleted by the refresher.';

CREATE TABLE readings_1m (
    bucket   timestamptz      NOT NULL,
    point    text             NOT NULL,
    variable text             NOT NULL,
    min      double precision NOT NULL,
    max      double precision NOT NULL,
    avg      double precision NOT NULL,
    last     double precision NOT NULL,
    count    bigint           NOT NULL,
    PRIMARY KEY (point, variable, bucket)
);
CREATE INDEX readings_1m_bucket_idx ON readings_1m (bucket DESC);
CREATE TABLE readings_1h (LIKE readings_1m INCLUDING ALL);
CREATE TABLE readings_1d (LIKE readings_1m INCLUDING ALL);
COMMENT ON TABLE readings_1m IS 'One-minute rollup of readings (UTC minutes): min, max, avg, last (the value at the latest time) and count per point and variable.';
COMMENT ON TABLE readings_1h IS 'One-hour rollup of readings (UTC hours): min, max, avg, last (the value at the latest time) and count per point and variable.';
COMMENT ON TABLE readings_1d IS 'One-day rollup of readings, days local to rollup_settings.day_timezone: min, max, avg, last (the value at the latest time) and count per point and variable.';

-- stackvps_rollup_bucket_sql returns the SQL expression that buckets the
-- column "time" for rollup ('1m', '1h' or '1d'; days local to tz). The same
-- buckets as TimescaleDB's time_bucket: UTC-aligned minutes and hours, local
-- midnights for days.
CREATE FUNCTION stackvps_rollup_bucket_sql(rollup text, col text, tz text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    CASE rollup
    WHEN '1m' THEN RETURN format('date_bin(''1 minute'', %s, ''2000-01-01 00:00:00+00''::timestamptz)', col);
    WHEN '1h' THEN RETURN format('date_bin(''1 hour'', %s, ''2000-01-01 00:00:00+00''::timestamptz)', col);
    WHEN '1d' THEN RETURN format('(date_trunc(''day'', %s AT TIME ZONE %L) AT TIME ZONE %L)', col, tz, tz);
    ELSE RAISE EXCEPTION 'unknown rollup %; want 1m, 1h or 1d', rollup USING ERRCODE = '22023';
    END CASE;
END $$;

-- stackvps_rollup_bucket_end returns the end of the bucket of rollup that
-- contains t.
CREATE FUNCTION stackvps_rollup_bucket_end(rollup text, t timestamptz, tz text)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN
    CASE rollup
    WHEN '1m' THEN RETURN date_bin('1 minute', t, '2000-01-01 00:00:00+00'::timestamptz) + interval '1 minute';
    WHEN '1h' THEN RETURN date_bin('1 hour', t, '2000-01-01 00:00:00+00'::timestamptz) + interval '1 hour';
    WHEN '1d' THEN RETURN (date_trunc('day', t AT TIME ZONE tz) + interval '1 day') AT TIME ZONE tz;
    ELSE RAISE EXCEPTION 'unknown rollup %; want 1m, 1h or 1d', rollup USING ERRCODE = '22023';
    END CASE;
END $$;

-- stackvps_refresh_rollup recomputes from readings exactly the buckets of
-- rollup ('1m', '1h' or '1d') that intersect [from_ts, to_ts), and returns
-- how many rollup rows it changed. Rows whose values did not change are not
-- rewritten; buckets that lost all their readings are deleted. Buckets that
-- start before rollup_settings.raw_dropped_before are left alone: their raw
-- readings may be gone. Refreshes of one rollup are serialized (a
-- transaction-scoped advisory lock), so a refresh that started from an older
-- snapshot can never overwrite a newer one.
CREATE FUNCTION stackvps_refresh_rollup(rollup text, from_ts timestamptz, to_ts timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    tbl     text;
    tz      text;
    floor_t timestamptz;
    lo      timestamptz;
    hi      timestamptz;
    changed bigint;
BEGIN
    tbl := 'readings_' || rollup;
    IF rollup NOT IN ('1m', '1h', '1d') THEN
        RAISE EXCEPTION 'unknown rollup %; want 1m, 1h or 1d', rollup USING ERRCODE = '22023';
    END IF;
    IF from_ts IS NULL OR to_ts IS NULL OR from_ts >= to_ts THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('stackvps.rollup.' || current_schema() || '.' || rollup));
    SELECT day_timezone, raw_dropped_before INTO tz, floor_t FROM rollup_settings;
    EXECUTE format('SELECT %s', stackvps_rollup_bucket_sql(rollup, '$1', tz)) INTO lo USING from_ts;
    hi := stackvps_rollup_bucket_end(rollup, to_ts - interval '1 microsecond', tz);
    IF floor_t IS NOT NULL AND lo < floor_t THEN
        EXECUTE format('SELECT %s', stackvps_rollup_bucket_sql(rollup, '$1', tz)) INTO lo USING floor_t;
        IF lo < floor_t THEN
            lo := stackvps_rollup_bucket_end(rollup, floor_t, tz);
        END IF;
    END IF;
    IF lo >= hi THEN
        RETURN 0;
    END IF;
    -- last is the value at max(time): one primary-key probe per bucket.
    -- Readings are chosen by their bucket; the time range around it only
    -- narrows the scan (3 hours wider for days: where midnight happens
    -- twice, the database buckets the first 00:xx into the day that starts
    -- at the second).
    EXECUTE format($q$
        WITH agg AS (
            SELECT a.bucket, a.point, a.variable, a.min, a.max, a.avg, r.value AS last, a.count
            FROM (SELECT %1$s AS bucket, point, variable, min(value) AS min, max(value) AS max,
                         avg(value) AS avg, max(time) AS last_time, count(*) AS count
                  FROM readings
                  WHERE time >= $1 - $3 AND time < $2 + $3
                    AND %1$s >= $1 AND %1$s < $2
                  GROUP BY 1, 2, 3) a
            JOIN readings r ON r.point = a.point AND r.variable = a.variable AND r.time = a.last_time
        ), up AS (
            INSERT INTO %2$I AS t (bucket, point, variable, min, max, avg, last, count)
            SELECT bucket, point, variable, min, max, avg, last, count FROM agg
            ON CONFLICT (point, variable, bucket) DO UPDATE
            SET min = EXCLUDED.min, max = EXCLUDED.max, avg = EXCLUDED.avg, last = EXCLUDED.last, count = EXCLUDED.count
            WHERE (t.min, t.max, t.avg, t.last, t.count) IS DISTINCT FROM
                  (EXCLUDED.min, EXCLUDED.max, EXCLUDED.avg, EXCLUDED.last, EXCLUDED.count)
            RETURNING 1
        ), del AS (
            DELETE FROM %2$I t
            WHERE t.bucket >= $1 AND t.bucket < $2
              AND NOT EXISTS (SELECT 1 FROM agg
                              WHERE agg.point = t.point AND agg.variable = t.variable AND agg.bucket = t.bucket)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM del)$q$,
        stackvps_rollup_bucket_sql(rollup, 'time', tz), tbl)
    INTO changed USING lo, hi, CASE rollup WHEN '1d' THEN interval '3 hours' ELSE interval '0' END;
    RETURN changed;
END $$;

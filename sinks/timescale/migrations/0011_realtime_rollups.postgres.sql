-- Real-time rollups on plain PostgreSQL, as TimescaleDB's continuous
-- aggregates with real-time aggregation are. Until now readings_1m,
-- readings_1h and readings_1d were tables, and each refresher pass
-- recomputed the open minute, hour and day whole to keep them fresh: under a
-- heavy stream a pass every rollups.refresh_delay re-aggregated the same
-- minute of raw readings again and again (hundreds of thousands of rows at
-- 10,000 readings/s), competing with ingest for the database.
--
-- Now each rollup is a view of the same name and columns over two parts:
--   * readings_<r>_materialized, the former table, for buckets before the
--     rollup's watermark (rollup_watermarks). The refresher materializes a
--     bucket once, when it has closed (stackvps_advance_rollups), and again
--     only when late readings touch it (stackvps_refresh_rollup);
--   * live aggregation for buckets from the watermark on, combining what
--     the materialized part would: readings_1m from readings, readings_1h
--     from the materialized minutes of the open hour and the raw readings
--     of the open minute, readings_1d from the materialized hours of the
--     open day (its minutes, where an hour does not lie within one local
--     date, as in Asia/Kolkata) and the same minutes and readings. The live
--     part covers the open buckets, so the rollups are as fresh as
--     readings, and it is small: normally the last minute of raw readings,
--     the minutes of the open hour, the hours of the open day.
-- Watermarks only move forward, to bucket boundaries: 1m to the last
-- closed minute, 1h to the last hour all of whose minutes are materialized,
-- 1d to the last local midnight at or before the 1h watermark. A range
-- below a watermark is refreshed from the materialized rollup below it, as
-- migration 0010 does.
--
-- Analysts see the same names and columns; only writes to the rollups (none
-- are expected) now need the _materialized tables.

ALTER TABLE readings_1m RENAME TO readings_1m_materialized;
ALTER TABLE readings_1h RENAME TO readings_1h_materialized;
ALTER TABLE readings_1d RENAME TO readings_1d_materialized;
ALTER INDEX readings_1m_pkey RENAME TO readings_1m_materialized_pkey;
ALTER INDEX readings_1h_pkey RENAME TO readings_1h_materialized_pkey;
ALTER INDEX readings_1d_pkey RENAME TO readings_1d_materialized_pkey;
ALTER INDEX readings_1m_bucket_idx RENAME TO readings_1m_materialized_bucket_idx;
ALTER INDEX readings_1h_bucket_idx RENAME TO readings_1h_materialized_bucket_idx;
ALTER INDEX readings_1d_bucket_idx RENAME TO readings_1d_materialized_bucket_idx;
COMMENT ON TABLE readings_1m_materialized IS 'The materialized part of readings_1m: buckets before its watermark (rollup_watermarks), kept by the sink''s rollup refresher. Query readings_1m.';
COMMENT ON TABLE readings_1h_materialized IS 'The materialized part of readings_1h: buckets before its watermark (rollup_watermarks), kept by the sink''s rollup refresher. Query readings_1h.';
COMMENT ON TABLE readings_1d_materialized IS 'The materialized part of readings_1d: buckets before its watermark (rollup_watermarks), kept by the sink''s rollup refresher. Query readings_1d.';

-- rollup_watermarks holds, per rollup, the bucket boundary before which the
-- view reads the materialized table and from which it aggregates live.
-- Every bucket before it is materialized, except late readings whose
-- ranges wait in rollup_invalidations.
CREATE TABLE rollup_watermarks (
    rollup     text        PRIMARY KEY CHECK (rollup IN ('1m', '1h', '1d')),
    watermark  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rollup_watermarks IS 'Per rollup, where readings_<rollup> stops reading its materialized table and aggregates live; moved forward by stackvps_advance_rollups.';

-- stackvps_rollup_day_floor returns the last start of a local day of tz at
-- or before t. (The database's day bucket of t can start after t where
-- midnight happens twice; the day before is taken then.)
CREATE FUNCTION stackvps_rollup_day_floor(t timestamptz, tz text)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    b timestamptz := date_trunc('day', t AT TIME ZONE tz) AT TIME ZONE tz;
BEGIN
    WHILE b > t LOOP
        b := date_trunc('day', (b - interval '3 hours') AT TIME ZONE tz) AT TIME ZONE tz;
    END LOOP;
    RETURN b;
END $$;

-- The existing rollups were refreshed up to the open buckets: they are
-- materialized up to now, except what rollup_invalidations still lists
-- (refreshed by the next pass as late readings), so the watermarks start at
-- the current minute, hour and day. Rows of the open buckets stay in the
-- tables, hidden, until the watermarks pass them and they are recomputed.
INSERT INTO rollup_watermarks (rollup, watermark)
SELECT '1m', date_bin('1 minute', now(), '2000-01-01 00:00:00+00'::timestamptz)
UNION ALL
SELECT '1h', date_bin('1 hour', now(), '2000-01-01 00:00:00+00'::timestamptz)
UNION ALL
SELECT '1d', stackvps_rollup_day_floor(date_bin('1 hour', now(), '2000-01-01 00:00:00+00'::timestamptz), day_timezone)
FROM rollup_settings;

-- stackvps_rollup_watermark returns the watermark of rollup. A function,
-- not a subquery, so that the views' conditions on it can be pushed down
-- into the views they read and used as index bounds.
CREATE FUNCTION stackvps_rollup_watermark(rollup text)
RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT w.watermark FROM rollup_watermarks w WHERE w.rollup = $1
$$;

-- stackvps_rollup_day_timezone returns rollup_settings.day_timezone.
CREATE FUNCTION stackvps_rollup_day_timezone()
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT day_timezone FROM rollup_settings
$$;

-- stackvps_rollup_day_source as in 0010, naming the materialized tables.
CREATE OR REPLACE FUNCTION stackvps_rollup_day_source(lo timestamptz, hi timestamptz, tz text)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad timestamptz[];
BEGIN
    SELECT array_agg(h) INTO bad
    FROM generate_series(date_bin('1 hour', lo, '2000-01-01 00:00:00+00'::timestamptz),
                         hi - interval '1 microsecond', interval '1 hour') h
    WHERE NOT stackvps_rollup_one_date(h, h + interval '1 hour', tz);
    IF bad IS NULL THEN
        RETURN 'readings_1h_materialized';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unnest(bad) h,
                   generate_series(h, h + interval '59 minutes', interval '1 minute') m
                   WHERE NOT stackvps_rollup_one_date(m, m + interval '1 minute', tz)) THEN
        RETURN 'readings_1m_materialized';
    END IF;
    RETURN 'readings';
END $$;

-- stackvps_refresh_rollup as in 0010 (same signature and contract), writing
-- readings_<rollup>_materialized and reading the materialized rollup below.
-- It recomputes the buckets whatever the watermark; buckets from the
-- watermark on are hidden by the view until stackvps_advance_rollups
-- recomputes them.
CREATE OR REPLACE FUNCTION stackvps_refresh_rollup(rollup text, from_ts timestamptz, to_ts timestamptz)
RETURNS bigint LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    tbl     text;
    tz      text;
    floor_t timestamptz;
    lo      timestamptz;
    hi      timestamptz;
    widen   interval := interval '0';
    src     text;
    agg     text;
    pick    text := '';
    changed bigint;
BEGIN
    tbl := 'readings_' || rollup || '_materialized';
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
    CASE rollup
    WHEN '1m' THEN src := 'readings';
    WHEN '1h' THEN src := 'readings_1m_materialized';
    ELSE
        widen := interval '3 hours';
        src := stackvps_rollup_day_source(lo - widen, hi + widen, tz);
    END CASE;
    IF widen > interval '0' THEN
        pick := format('AND %1$s >= $1 AND %1$s < $2', stackvps_rollup_bucket_sql(rollup, CASE WHEN src = 'readings' THEN 'time' ELSE 's.bucket' END, tz));
    END IF;
    IF src = 'readings' THEN
        agg := format($q$
            SELECT a.bucket, a.point, a.variable, a.min, a.max, a.avg,
                   (SELECT r.value FROM readings r
                    WHERE r.point = a.point AND r.variable = a.variable AND r.time = a.last_time) AS last,
                   a.count
            FROM (SELECT %1$s AS bucket, point, variable, min(value) AS min, max(value) AS max,
                         avg(value) AS avg, max(time) AS last_time, count(*) AS count
                  FROM readings
                  WHERE time >= $1 - $3 AND time < $2 + $3 %2$s
                  GROUP BY 1, 2, 3) a$q$,
            stackvps_rollup_bucket_sql(rollup, 'time', tz), pick);
    ELSE
        agg := format($q$
            SELECT %1$s AS bucket, s.point, s.variable, min(s.min) AS min, max(s.max) AS max,
                   sum(s.avg * s.count) / sum(s.count)::double precision AS avg,
                   (array_agg(s.last ORDER BY s.bucket DESC))[1] AS last,
                   sum(s.count)::bigint AS count
            FROM %2$I s
            WHERE s.bucket >= $1 - $3 AND s.bucket < $2 + $3 %3$s
            GROUP BY 1, 2, 3$q$,
            stackvps_rollup_bucket_sql(rollup, 's.bucket', tz), src, pick);
    END IF;
    EXECUTE format($q$
        WITH agg AS (%1$s
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
        SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM del)$q$, agg, tbl)
    INTO changed USING lo, hi, widen;
    RETURN changed;
END $$;

-- stackvps_advance_rollups moves the watermarks forward to upto, in one
-- transaction: readings_1m to the start of upto's minute, readings_1h to the
-- start of the hour of the new 1m watermark, readings_1d to the last local
-- midnight at or before the new 1h watermark. Each rollup's buckets between
-- its old and new watermark are materialized first (in order, so each reads
-- a materialized rollup below it that is complete there). Watermarks never
-- move back: an upto before them changes nothing. Returns each rollup's
-- watermark and the rollup rows the advance changed. Call it with a time a
-- little in the past: readings that arrive for a bucket after it was
-- materialized are late readings (rollup_invalidations, refreshed by the
-- next pass).
CREATE FUNCTION stackvps_advance_rollups(upto timestamptz)
RETURNS TABLE (rollup text, watermark timestamptz, rows_changed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    tz   text;
    old  timestamptz[];
    nw   timestamptz[];
    names text[] := ARRAY['1m', '1h', '1d'];
    i    int;
BEGIN
    -- Locks the three rows: concurrent advances (and a day zone change,
    -- which moves the 1d watermark) are serialized here.
    SELECT array_agg(w.watermark ORDER BY array_position(names, w.rollup)) INTO old
    FROM (SELECT * FROM rollup_watermarks ORDER BY rollup FOR UPDATE) w;
    SELECT day_timezone INTO tz FROM rollup_settings;
    nw := old;
    nw[1] := greatest(old[1], date_bin('1 minute', upto, '2000-01-01 00:00:00+00'::timestamptz));
    nw[2] := greatest(old[2], date_bin('1 hour', nw[1], '2000-01-01 00:00:00+00'::timestamptz));
    nw[3] := greatest(old[3], stackvps_rollup_day_floor(nw[2], tz));
    FOR i IN 1..3 LOOP
        rollup := names[i];
        watermark := nw[i];
        rows_changed := 0;
        IF nw[i] > old[i] THEN
            rows_changed := stackvps_refresh_rollup(names[i], old[i], nw[i]);
            UPDATE rollup_watermarks w SET watermark = nw[i], updated_at = now() WHERE w.rollup = names[i];
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- The views. Each live part reads the materialized tables and readings
-- directly, never another view: a condition pushed down through a view
-- into the one below is evaluated on every row there, and the watermark
-- conditions are index bounds on the tables' bucket (or time) indexes,
-- evaluated once. Raw readings past the 1m watermark enter the hour and
-- day as one-reading sub-buckets (min = max = avg = last = value, count 1),
-- which combine exactly as minutes do.
CREATE VIEW readings_1m AS
SELECT m.bucket, m.point, m.variable, m.min, m.max, m.avg, m.last, m.count
FROM readings_1m_materialized m
WHERE m.bucket < stackvps_rollup_watermark('1m')
UNION ALL
-- last is the value at max(time): one primary-key probe per bucket.
SELECT a.bucket, a.point, a.variable, a.min, a.max, a.avg,
       (SELECT r.value FROM readings r
        WHERE r.point = a.point AND r.variable = a.variable AND r.time = a.last_time) AS last,
       a.count
FROM (SELECT date_bin('1 minute', time, '2000-01-01 00:00:00+00'::timestamptz) AS bucket, point, variable,
             min(value) AS min, max(value) AS max, avg(value) AS avg, max(time) AS last_time, count(*) AS count
      FROM readings
      WHERE time >= stackvps_rollup_watermark('1m')
      GROUP BY 1, 2, 3) a;

CREATE VIEW readings_1h AS
SELECT h.bucket, h.point, h.variable, h.min, h.max, h.avg, h.last, h.count
FROM readings_1h_materialized h
WHERE h.bucket < stackvps_rollup_watermark('1h')
UNION ALL
SELECT date_bin('1 hour', s.sub, '2000-01-01 00:00:00+00'::timestamptz) AS bucket, s.point, s.variable,
       min(s.min) AS min, max(s.max) AS max,
       sum(s.avg * s.count) / sum(s.count)::double precision AS avg,
       (array_agg(s.last ORDER BY s.sub DESC))[1] AS last,
       sum(s.count)::bigint AS count
FROM (SELECT m.bucket AS sub, m.point, m.variable, m.min, m.max, m.avg, m.last, m.count
      FROM readings_1m_materialized m
      WHERE m.bucket >= stackvps_rollup_watermark('1h') AND m.bucket < stackvps_rollup_watermark('1m')
      UNION ALL
      SELECT r.time, r.point, r.variable, r.value, r.value, r.value, r.value, 1::bigint
      FROM readings r
      WHERE r.time >= stackvps_rollup_watermark('1m')) s
GROUP BY 1, 2, 3;

-- stackvps_rollup_live_hours returns the UTC hours the live part of
-- readings_1d reads from readings_1h_materialized or, where an hour does
-- not lie within one local date (ok false, as the hour of midnight in
-- Asia/Kolkata), from readings_1m_materialized: from 3 hours before the 1d
-- watermark (where midnight happens twice, the first 00:xx belongs to the
-- day that starts at the second) to the 1h watermark; with the day zone
-- and the 1d watermark.
-- PL/pgSQL, so that it is not inlined and the planner takes its ROWS
-- estimate (it would take a generate_series over timestamps for 1,000
-- rows, and a per-point query of readings_1d would then cost enough to be
-- compiled by JIT, a second for a query of a few milliseconds).
CREATE FUNCTION stackvps_rollup_live_hours()
RETURNS TABLE (hr timestamptz, ok boolean, tz text, w1d timestamptz)
LANGUAGE plpgsql STABLE ROWS 30 AS $$
BEGIN
    RETURN QUERY
    SELECT h, stackvps_rollup_one_date(h, h + interval '1 hour', s.day_timezone), s.day_timezone, w.w1d
    FROM rollup_settings s,
         (SELECT stackvps_rollup_watermark('1d') AS w1d, stackvps_rollup_watermark('1h') AS w1h) w,
         generate_series(date_bin('1 hour', w.w1d - interval '3 hours', '2000-01-01 00:00:00+00'::timestamptz),
                         w.w1h - interval '1 hour', interval '1 hour') h;
END $$;

-- The live days: whole hours before the 1h watermark where they lie
-- within one local date, else their minutes; the minutes of the open hour;
-- the raw readings of the open minute. Sub-buckets before the 1d watermark
-- count only when their day starts at or after it. Minutes are taken to lie
-- within one local date: every UTC offset in use since 1972 is whole
-- minutes, and the live days are today's.
CREATE VIEW readings_1d AS
SELECT d.bucket, d.point, d.variable, d.min, d.max, d.avg, d.last, d.count
FROM readings_1d_materialized d
WHERE d.bucket < stackvps_rollup_watermark('1d')
UNION ALL
SELECT x.day AS bucket, x.point, x.variable,
       min(x.min) AS min, max(x.max) AS max,
       sum(x.avg * x.count) / sum(x.count)::double precision AS avg,
       (array_agg(x.last ORDER BY x.sub DESC))[1] AS last,
       sum(x.count)::bigint AS count
FROM (
    SELECT date_trunc('day', h.bucket AT TIME ZONE g.tz) AT TIME ZONE g.tz AS day, h.bucket AS sub,
           h.point, h.variable, h.min, h.max, h.avg, h.last, h.count
    FROM stackvps_rollup_live_hours() g
    JOIN readings_1h_materialized h ON h.bucket = g.hr
    WHERE g.ok
      AND h.bucket >= stackvps_rollup_watermark('1d') - interval '3 hours'
      AND h.bucket < stackvps_rollup_watermark('1h')
      AND (h.bucket >= g.w1d OR date_trunc('day', h.bucket AT TIME ZONE g.tz) AT TIME ZONE g.tz >= g.w1d)
    UNION ALL
    SELECT date_trunc('day', m.bucket AT TIME ZONE g.tz) AT TIME ZONE g.tz, m.bucket,
           m.point, m.variable, m.min, m.max, m.avg, m.last, m.count
    FROM stackvps_rollup_live_hours() g
    JOIN readings_1m_materialized m ON m.bucket >= g.hr AND m.bucket < g.hr + interval '1 hour'
    WHERE NOT g.ok
      AND m.bucket >= stackvps_rollup_watermark('1d') - interval '3 hours'
      AND m.bucket < stackvps_rollup_watermark('1h')
      AND (m.bucket >= g.w1d OR date_trunc('day', m.bucket AT TIME ZONE g.tz) AT TIME ZONE g.tz >= g.w1d)
    UNION ALL
    SELECT date_trunc('day', m.bucket AT TIME ZONE z.tz) AT TIME ZONE z.tz, m.bucket,
           m.point, m.variable, m.min, m.max, m.avg, m.last, m.count
    FROM readings_1m_materialized m
    CROSS JOIN (SELECT day_timezone AS tz FROM rollup_settings WHERE id) z
    WHERE m.bucket >= stackvps_rollup_watermark('1h') AND m.bucket < stackvps_rollup_watermark('1m')
    UNION ALL
    SELECT date_trunc('day', r.time AT TIME ZONE z.tz) AT TIME ZONE z.tz, r.time,
           r.point, r.variable, r.value, r.value, r.value, r.value, 1::bigint
    FROM readings r
    CROSS JOIN (SELECT day_timezone AS tz FROM rollup_settings WHERE id) z
    WHERE r.time >= stackvps_rollup_watermark('1m')
) x
GROUP BY 1, 2, 3;

COMMENT ON VIEW readings_1m IS 'One-minute rollup of readings (UTC minutes): min, max, avg, last (the value at the latest time) and count per point and variable. Materialized before its watermark, aggregated live from it.';
COMMENT ON VIEW readings_1h IS 'One-hour rollup of readings (UTC hours): min, max, avg, last (the value at the latest time) and count per point and variable. Materialized before its watermark, aggregated live from it.';
COMMENT ON VIEW readings_1d IS 'One-day rollup of readings, days local to rollup_settings.day_timezone: min, max, avg, last (the value at the latest time) and count per point and variable. Materialized before its watermark, aggregated live from it.';

-- One row each: without statistics the planner takes them for a thousand
-- rows, and the views' estimated costs reach JIT compilation.
ANALYZE rollup_settings;
ANALYZE rollup_watermarks;

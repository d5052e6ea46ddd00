-- Hierarchical rollups on plain PostgreSQL. stackvps_refresh_rollup (0005)
-- recomputed every bucket from readings, so the refresher's pass every
-- rollups.refresh_delay re-aggregated the whole current hour (1h) and the
-- whole current local day (1d) of raw readings of every point. Now, as
-- TimescaleDB's hierarchical continuous aggregates do:
--   readings_1m from readings (as before),
--   readings_1h from readings_1m (UTC hours are whole UTC minutes),
--   readings_1d from readings_1h when every UTC hour it reads lies within
--     one local date of the day zone (true of America/Santiago and of every
--     zone whose offsets are whole hours), otherwise from readings_1m when
--     every UTC minute it reads does (every offset in use since 1972 is
--     whole minutes: Asia/Kolkata +05:30, Asia/Kathmandu +05:45), otherwise
--     from readings (offsets with seconds: local mean time such as
--     Kathmandu's +05:41:16 before 1920, Africa/Monrovia's -00:44:30 before
--     1972). The alignment is checked over the sub-buckets each call reads,
--     never assumed from the zone's name.
-- The combination is exact except for avg: min of mins, max of maxes,
-- count = sum of counts, last = the last of the latest sub-bucket (buckets
-- partition time, so that is the value at max(time)), avg =
-- sum(avg * count) / sum(count), which differs from avg over the raw values
-- only by float rounding (relative 1e-15 or so). Buckets whose sub-buckets
-- are all gone are deleted, as before.
--
-- Order. A refresh of 1h or 1d is only as fresh as the rollup it reads, so
-- the sink's Refresher refreshes 1m, then 1h, then 1d over the same ranges
-- in one pass, and a failed refresh aborts the pass (the ranges not done
-- stay pending, their rollup_invalidations rows stay): a 1h or 1d refresh
-- never runs before the 1m refresh of the same pass succeeded. On plain
-- PostgreSQL every rollup_invalidations row makes the refresher refresh all
-- three rollups over its range, whatever its rollup column says: lower
-- rollups first so the named one reads fresh input, higher ones after
-- because they derive from it. (The pipeline writes rollup-specific rows
-- only on TimescaleDB, where each continuous aggregate reads readings: '1d'
-- after a day-zone change.) Anyone calling this function by hand must do
-- the same: refresh '1m', then '1h', then '1d'.
--
-- The contract is unchanged: same signature, returns the rollup rows
-- changed, one advisory lock per rollup, buckets starting before
-- rollup_settings.raw_dropped_before are left alone, days read 3 hours of
-- sub-buckets either side (where midnight happens twice the database
-- buckets the first 00:xx into the day that starts at the second).
-- TimescaleDB mode is untouched (0010_hierarchical_rollups.timescale.sql).

-- stackvps_rollup_one_date says whether every instant of [a, b) has the same
-- local date in tz: the UTC offset is the same at both ends and so is the
-- local date (an assumption, not checked: no zone changes its offset and
-- back again within one sub-bucket). Every reading in such a sub-bucket
-- then falls in the local day of the sub-bucket's start.
CREATE FUNCTION stackvps_rollup_one_date(a timestamptz, b timestamptz, tz text)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (a AT TIME ZONE tz)::date = (e AT TIME ZONE tz)::date
       AND (a AT TIME ZONE tz) - (a AT TIME ZONE 'UTC') = (e AT TIME ZONE tz) - (e AT TIME ZONE 'UTC')
    FROM (SELECT b - interval '1 microsecond' AS e) x
$$;

-- stackvps_rollup_day_source returns the relation readings_1d is recomputed
-- from over the sub-buckets that intersect [lo, hi) in zone tz:
-- 'readings_1h' when every UTC hour there lies within one local date,
-- else 'readings_1m' when every UTC minute does, else 'readings'.
CREATE FUNCTION stackvps_rollup_day_source(lo timestamptz, hi timestamptz, tz text)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad timestamptz[];
BEGIN
    SELECT array_agg(h) INTO bad
    FROM generate_series(date_bin('1 hour', lo, '2000-01-01 00:00:00+00'::timestamptz),
                         hi - interval '1 microsecond', interval '1 hour') h
    WHERE NOT stackvps_rollup_one_date(h, h + interval '1 hour', tz);
    IF bad IS NULL THEN
        RETURN 'readings_1h';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unnest(bad) h,
                   generate_series(h, h + interval '59 minutes', interval '1 minute') m
                   WHERE NOT stackvps_rollup_one_date(m, m + interval '1 minute', tz)) THEN
        RETURN 'readings_1m';
    END IF;
    RETURN 'readings';
END $$;

-- stackvps_refresh_rollup recomputes exactly the buckets of rollup ('1m',
-- '1h' or '1d') that intersect [from_ts, to_ts), and returns how many rollup
-- rows it changed: 1m from readings, 1h from readings_1m, 1d from
-- readings_1h or readings_1m (stackvps_rollup_day_source), so the rollup
-- below must be fresh over the range first. Rows whose values did not
-- change are not rewritten; buckets that lost all their readings (all their
-- sub-buckets) are deleted. Buckets that start before
-- rollup_settings.raw_dropped_before are left alone. Refreshes of one rollup
-- are serialized (a transaction-scoped advisory lock), so a refresh that
-- started from an older snapshot can never overwrite a newer one.
-- JIT is off inside: the planner's estimates of a busy range pass
-- jit_above_cost and each call compiled its plan (~180 ms) for a query
-- that runs every few seconds on a bounded range.
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
    -- Sub-buckets (or readings) are chosen by the bucket they fall in; the
    -- time range around it only narrows the scan, 3 hours wider for days.
    CASE rollup
    WHEN '1m' THEN src := 'readings';
    WHEN '1h' THEN src := 'readings_1m';
    ELSE
        widen := interval '3 hours';
        src := stackvps_rollup_day_source(lo - widen, hi + widen, tz);
    END CASE;
    -- Days read 3 hours either side and pick readings by their bucket; for
    -- minutes and hours [lo, hi) is aligned to the rollup's buckets, so the
    -- time range alone picks exactly the buckets' readings, and the bucket
    -- predicate is left out: the planner cannot estimate it (it guessed a
    -- few hundred groups where a busy minute has hundreds of thousands of
    -- readings, sorted them on disk and took twice as long).
    IF widen > interval '0' THEN
        pick := format('AND %1$s >= $1 AND %1$s < $2', stackvps_rollup_bucket_sql(rollup, CASE WHEN src = 'readings' THEN 'time' ELSE 's.bucket' END, tz));
    END IF;
    IF src = 'readings' THEN
        -- last is the value at max(time): one primary-key probe per bucket,
        -- as a subquery so no misestimate can turn it into a join that
        -- scans the partition.
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
        -- Sub-buckets partition time, so last is the last of the latest one.
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

COMMENT ON TABLE rollup_invalidations IS 'Time ranges of readings stored but not yet refreshed into readings_1m/_1h/_1d; written with each batch, deleted by the refresher. On plain PostgreSQL every row refreshes all three rollups (1m, then 1h from 1m, then 1d), whatever its rollup column.';

-- Cost of one rollup refresh pass on plain PostgreSQL, 0005's
-- stackvps_refresh_rollup (every rollup from readings) against 0010's
-- (1h from readings_1m, 1d from readings_1h), on one local day of
-- one-minute readings of :points points x 3 variables.
--
--   psql "$DATABASE_URL" -v points=500 -f benchmarks/rollups_refresh.sql
--
-- It works in its own schema, bench_rollups, dropped at the start and at the
-- end. Each round stands for one refresher pass at the end of the day: the
-- last minute's readings change (1,500 rows at 500 points), then 1m is
-- refreshed over that minute, 1h over the last hour and 1d over the day,
-- as the Refresher aligns a touched range.
\set ON_ERROR_STOP on
\if :{?points}
\else
\set points 500
\endif
\if :{?rounds}
\else
\set rounds 5
\endif
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_rollups CASCADE;
CREATE SCHEMA bench_rollups;
SET search_path = bench_rollups;
\ir ../sinks/timescale/migrations/0001_readings.postgres.sql
\ir ../sinks/timescale/migrations/0005_rollups.postgres.sql
ALTER FUNCTION stackvps_refresh_rollup(text, timestamptz, timestamptz) RENAME TO refresh_0005;
\ir ../sinks/timescale/migrations/0010_hierarchical_rollups.postgres.sql
ALTER FUNCTION stackvps_refresh_rollup(text, timestamptz, timestamptz) RENAME TO refresh_0010;
SET client_min_messages = notice;

-- Yesterday in Santiago, the rollups' default day zone.
SELECT (date_trunc('day', now() AT TIME ZONE 'America/Santiago') - interval '1 day') AT TIME ZONE 'America/Santiago' AS day_start,
       date_trunc('day', now() AT TIME ZONE 'America/Santiago') AT TIME ZONE 'America/Santiago' AS day_end \gset
SELECT stackvps_ensure_readings_partitions(:'day_start', :'day_end');
\timing on
INSERT INTO readings (time, point, variable, value)
SELECT t, 'P' || lpad(p::text, 5, '0'), v, round((random() * 1000)::numeric, 2)::float8
FROM generate_series(:'day_start'::timestamptz, :'day_end'::timestamptz - interval '1 minute', interval '1 minute') t,
     generate_series(1, :points) p, unnest(ARRAY['flow', 'level', 'totalizer']) v;
ANALYZE readings;
SELECT refresh_0005('1m', :'day_start', :'day_end') AS rows_1m;
ANALYZE readings_1m;
SELECT refresh_0005('1h', :'day_start', :'day_end') AS rows_1h;
ANALYZE readings_1h;
SELECT refresh_0005('1d', :'day_start', :'day_end') AS rows_1d;
\timing off
SELECT (SELECT count(*) FROM readings) AS readings, (SELECT count(*) FROM readings_1m) AS readings_1m,
       (SELECT count(*) FROM readings_1h) AS readings_1h, (SELECT count(*) FROM readings_1d) AS readings_1d;

SET bench.day_start = :'day_start';
SET bench.day_end = :'day_end';
SET bench.rounds = :rounds;
CREATE TEMP TABLE timings (fn text, rollup text, round int, ms float8, changed bigint);
DO $$
DECLARE
    day_start timestamptz := current_setting('bench.day_start')::timestamptz;
    day_end   timestamptz := current_setting('bench.day_end')::timestamptz;
    last_min  timestamptz := day_end - interval '1 minute';
    last_hour timestamptz := day_end - interval '1 hour';
    fn text;
    ru text;
    t0 timestamptz;
    n  bigint;
BEGIN
    FOR round IN 1 .. current_setting('bench.rounds')::int LOOP
        FOREACH fn IN ARRAY ARRAY['refresh_0005', 'refresh_0010'] LOOP
            UPDATE readings SET value = value + 1 WHERE time >= last_min AND time < day_end;
            FOREACH ru IN ARRAY ARRAY['1m', '1h', '1d'] LOOP
                t0 := clock_timestamp();
                EXECUTE format('SELECT %I($1, $2, $3)', fn) INTO n USING ru,
                    CASE ru WHEN '1m' THEN last_min WHEN '1h' THEN last_hour ELSE day_start END, day_end;
                INSERT INTO timings VALUES (fn, ru, round,
                    extract(epoch FROM clock_timestamp() - t0) * 1000, n);
            END LOOP;
        END LOOP;
    END LOOP;
END $$;
SELECT fn, rollup, count(*) AS rounds, round(min(ms)::numeric, 1) AS min_ms,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1) AS median_ms,
       round(max(ms)::numeric, 1) AS max_ms, max(changed) AS rows_changed
FROM timings GROUP BY 1, 2 ORDER BY 2, 1;

-- The two functions agree (avg to float rounding).
SELECT count(*) AS differing_1d_rows FROM readings_1d d
JOIN (SELECT date_trunc('day', time AT TIME ZONE 'America/Santiago') AT TIME ZONE 'America/Santiago' AS bucket,
             point, variable, min(value) AS min, max(value) AS max, avg(value) AS avg,
             (array_agg(value ORDER BY time DESC))[1] AS last, count(*) AS count
      FROM readings GROUP BY 1, 2, 3) r USING (bucket, point, variable)
WHERE (d.min, d.max, d.last, d.count) IS DISTINCT FROM (r.min, r.max, r.last, r.count)
   OR abs(d.avg - r.avg) > 1e-9 * greatest(1, abs(r.avg));
RESET search_path;
DROP SCHEMA bench_rollups CASCADE;

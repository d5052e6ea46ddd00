package timescale_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/sinks/timescale"
)

var santiago = func() *time.Location {
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		panic(err)
	}
	return loc
}()

// rollupEnv is a migrated schema with a writer whose OnStored hook feeds a
// refresher, as buildSink wires them.
type rollupEnv struct {
	pool   *pgxpool.Pool
	mode   timescale.Mode
	w      *timescale.Writer
	r      *timescale.Refresher
	reg    *prometheus.Registry
	cfg    config.Rollups
	offset atomic.Int64
}

func newRollupEnv(t *testing.T, mutate func(*config.Rollups)) *rollupEnv {
	t.Helper()
	return newRollupEnvAt(t, mutate, nil)
}

// newRollupEnvAt is newRollupEnv with the refresher's clock set to now
// (time.Now when nil).
func newRollupEnvAt(t *testing.T, mutate func(*config.Rollups), now func() time.Time) *rollupEnv {
	t.Helper()
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, time.Minute)
	res, err := timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	cfg := config.Default().Rollups
	if mutate != nil {
		mutate(&cfg)
	}
	require.NoError(t, timescale.ApplyPolicies(ctx, pool, cfg, quiet))
	e := &rollupEnv{pool: pool, mode: res.Mode, reg: prometheus.NewRegistry(), cfg: cfg}
	e.w, err = timescale.NewWriter(ctx, pool, jsonRow, e.reg, quiet)
	require.NoError(t, err)
	e.r, err = timescale.NewRefresher(ctx, pool, timescale.RefresherConfig{Rollups: cfg, Registerer: e.reg, Log: quiet, Now: now})
	require.NoError(t, err)
	e.w.OnStored(e.r.Touch)
	t.Logf("mode %s", res.Mode)
	return e
}

// write stores rows through the writer, as one batch.
func (e *rollupEnv) write(t *testing.T, rows []timescale.Row) {
	t.Helper()
	require.NoError(t, e.tryWrite(rows))
}

// tryWrite is write for goroutines other than the test's: it returns what
// went wrong.
func (e *rollupEnv) tryWrite(rows []timescale.Row) error {
	recs := make([]pipeline.Record, 0, len(rows))
	for _, r := range rows {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		recs = append(recs, pipeline.Record{Topic: "readings", Partition: 0, Offset: e.offset.Add(1), Value: b})
	}
	next := map[string]map[int32]int64{"readings": {0: e.offset.Load() + 1}}
	var dead deadLog
	if err := e.w.Write(context.Background(), "g", recs, next, dead.fn); err != nil {
		return err
	}
	if len(dead.recs) > 0 {
		return fmt.Errorf("%d rows dead-lettered", len(dead.recs))
	}
	return nil
}

func (e *rollupEnv) pass(t *testing.T) {
	t.Helper()
	require.NoError(t, e.r.Pass(testenv.Context(t, time.Minute)))
}

// metric returns the value of a rollup metric for one rollup.
func (e *rollupEnv) metric(t *testing.T, name string, ru timescale.Rollup) float64 {
	t.Helper()
	return gathered(t, e.reg, name, ru)
}

func gathered(t *testing.T, reg *prometheus.Registry, name string, ru timescale.Rollup) float64 {
	t.Helper()
	return testenv.Metric(t, reg, name, map[string]string{"rollup": string(ru)})
}

type aggRow struct {
	Min, Max, Avg, Last float64
	Count               int64
}

type aggKey struct {
	Bucket          time.Time
	Point, Variable string
}

// bucketSQL buckets "time" independently of the code under test.
func bucketSQL(ru timescale.Rollup, zone string) string {
	switch ru {
	case timescale.Rollup1m:
		return `date_trunc('minute', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`
	case timescale.Rollup1h:
		return `date_trunc('hour', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`
	}
	return fmt.Sprintf(`date_trunc('day', time AT TIME ZONE '%s') AT TIME ZONE '%s'`, zone, zone)
}

// expected is the rollup computed in SQL over readings.
func expected(t *testing.T, pool *pgxpool.Pool, ru timescale.Rollup, zone string) map[aggKey]aggRow {
	t.Helper()
	return queryAgg(t, pool, fmt.Sprintf(`SELECT bucket, point, variable, min(value), max(value), avg(value),
		(array_agg(value ORDER BY time DESC))[1], count(*)
		FROM (SELECT %s AS bucket, * FROM readings) r GROUP BY 1, 2, 3`, bucketSQL(ru, zone)))
}

func stored(t *testing.T, pool *pgxpool.Pool, ru timescale.Rollup) map[aggKey]aggRow {
	t.Helper()
	return queryAgg(t, pool, `SELECT bucket, point, variable, min, max, avg, last, count FROM `+ru.Table())
}

func queryAgg(t *testing.T, pool *pgxpool.Pool, sql string) map[aggKey]aggRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql)
	require.NoError(t, err)
	out := map[aggKey]aggRow{}
	var k aggKey
	var v aggRow
	_, err = pgx.ForEachRow(rows, []any{&k.Bucket, &k.Point, &k.Variable, &v.Min, &v.Max, &v.Avg, &v.Last, &v.Count}, func() error {
		k.Bucket = k.Bucket.UTC()
		_, dup := out[k]
		require.False(t, dup, "two rows for %v", k)
		out[k] = v
		return nil
	})
	require.NoError(t, err)
	return out
}

// requireSameAgg compares rollups exactly, except avg: on plain PostgreSQL
// readings_1h and readings_1d are computed from the rollup below
// (sum(avg*count)/sum(count), migration 0010), which differs from avg over
// the raw values by float rounding only, so avg is compared within a
// relative 1e-9 (an absolute 1e-9 near zero).
func requireSameAgg(t *testing.T, want, got map[aggKey]aggRow, what string) {
	t.Helper()
	require.Len(t, got, len(want), "%s: number of buckets", what)
	for k, w := range want {
		g, ok := got[k]
		require.True(t, ok, "%s: bucket %v missing", what, k)
		require.Equal(t, w.Count, g.Count, "%s %v count", what, k)
		require.Equal(t, w.Min, g.Min, "%s %v min", what, k)
		require.Equal(t, w.Max, g.Max, "%s %v max", what, k)
		require.Equal(t, w.Last, g.Last, "%s %v last", what, k)
		require.InDelta(t, w.Avg, g.Avg, 1e-9*math.Max(1, math.Abs(w.Avg)), "%s %v avg", what, k)
	}
}

// requireRollupsMatch checks every rollup against SQL over readings, and
// the materialized part alone too, so a pass that did not materialize
// cannot hide behind real-time aggregation: on plain PostgreSQL the
// readings_<r>_materialized table below the watermark (the readings of the
// data sets are all far before it), on TimescaleDB the continuous aggregate
// with materialized_only on.
func (e *rollupEnv) requireRollupsMatch(t *testing.T, zone string) {
	t.Helper()
	for _, ru := range timescale.Rollups() {
		want := expected(t, e.pool, ru, zone)
		require.NotEmpty(t, want)
		requireSameAgg(t, want, stored(t, e.pool, ru), ru.Table())
		if e.mode == timescale.ModePostgres {
			wm := e.watermark(t, ru)
			below := map[aggKey]aggRow{}
			for k, v := range want {
				if k.Bucket.Before(wm) {
					below[k] = v
				}
			}
			got := queryAgg(t, e.pool, `SELECT bucket, point, variable, min, max, avg, last, count FROM `+e.materialization(t, ru)+
				` WHERE bucket < stackvps_rollup_watermark('`+string(ru)+`')`)
			requireSameAgg(t, below, got, e.materialization(t, ru))
		}
		if e.mode == timescale.ModeTimescale {
			requireSameAgg(t, want, e.materializedOnly(t, ru), ru.Table()+" (materialized only)")
		}
	}
}

// materializedOnly returns what the continuous aggregate ru has
// materialized (TimescaleDB), without real-time aggregation.
func (e *rollupEnv) materializedOnly(t *testing.T, ru timescale.Rollup) map[aggKey]aggRow {
	t.Helper()
	ctx := context.Background()
	_, err := e.pool.Exec(ctx, `ALTER MATERIALIZED VIEW `+ru.Table()+` SET (timescaledb.materialized_only = true)`)
	require.NoError(t, err)
	got := stored(t, e.pool, ru)
	_, err = e.pool.Exec(ctx, `ALTER MATERIALIZED VIEW `+ru.Table()+` SET (timescaledb.materialized_only = false)`)
	require.NoError(t, err)
	return got
}

// dataSet covers out-of-order readings around three local midnights in
// Santiago: an ordinary one, the end of daylight saving (first Sunday of
// April: 24:00 -03 becomes 23:00 -04, so Saturday has 25 hours) and its
// start (first Sunday of September: 24:00 -04 becomes 01:00 -03, Sunday
// midnight does not exist).
func dataSet() []timescale.Row {
	rng := rand.New(rand.NewPCG(4, 2026))
	var rows []timescale.Row
	windows := []time.Time{
		time.Date(2026, 5, 17, 22, 0, 0, 0, santiago), // ordinary midnight
		time.Date(2026, 4, 4, 21, 0, 0, 0, santiago),  // DST ends at 2026-04-05 03:00Z
		time.Date(2026, 9, 5, 21, 0, 0, 0, santiago),  // DST starts at 2026-09-06 04:00Z
	}
	for _, start := range windows {
		for _, point := range []string{"P1", "P2"} {
			for _, variable := range []string{"flow", "level"} {
				// Every 7 minutes and some seconds over 6 hours.
				for i := range 52 {
					tm := start.Add(time.Duration(i)*7*time.Minute + time.Duration(rng.IntN(60))*time.Second + time.Duration(rng.IntN(1000))*time.Microsecond)
					rows = append(rows, timescale.Row{Time: tm, Point: point, Variable: variable,
						Value: math.Round(rng.Float64()*10000) / 100, Device: "dev-" + point})
				}
			}
		}
	}
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	return rows
}

func batches(rows []timescale.Row, size int) [][]timescale.Row {
	var out [][]timescale.Row
	for len(rows) > size {
		out = append(out, rows[:size])
		rows = rows[size:]
	}
	return append(out, rows)
}

func TestRollupsMatchSQLIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	rows := dataSet()
	cut := len(rows) * 7 / 10
	// Out of order, in several batches, refreshed as they come.
	for i, b := range batches(rows[:cut], 97) {
		e.write(t, b)
		if i%3 == 2 {
			e.pass(t)
		}
	}
	e.pass(t)
	e.requireRollupsMatch(t, "America/Santiago")

	// Late readings land in buckets already refreshed, with replays of
	// stored ones mixed in (merged away, they touch nothing new).
	for _, b := range batches(rows[cut:], 50) {
		e.write(t, append(b, rows[:5]...))
	}
	e.pass(t)
	e.requireRollupsMatch(t, "America/Santiago")

	// The days are the local days of Santiago, DST changes included.
	perDay := map[string]int64{}
	for _, r := range rows {
		if r.Point == "P1" && r.Variable == "flow" {
			perDay[r.Time.In(santiago).Format(time.DateOnly)]++
		}
	}
	got := map[string]int64{}
	for k, v := range stored(t, e.pool, timescale.Rollup1d) {
		if k.Point == "P1" && k.Variable == "flow" {
			local := k.Bucket.In(santiago)
			// Midnight, or 01:00 on the day whose midnight DST skipped.
			require.True(t, local.Hour() == 0 || local.Format(time.DateOnly) == "2026-09-06" && local.Hour() == 1,
				"day bucket %s", local)
			require.Zero(t, local.Minute())
			got[local.Format(time.DateOnly)] = v.Count
		}
	}
	require.Equal(t, perDay, got)
	require.Contains(t, got, "2026-04-04")
	require.Contains(t, got, "2026-09-06")

	var left int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM rollup_invalidations`).Scan(&left))
	require.Zero(t, left, "refreshed invalidations are deleted")
	for _, ru := range timescale.Rollups() {
		require.Positive(t, e.metric(t, "stackvps_rollups_refreshes_total", ru))
		require.Positive(t, e.metric(t, "stackvps_rollups_refresh_seconds", ru))
		require.Zero(t, e.metric(t, "stackvps_rollups_refresh_errors_total", ru))
		fresh := e.metric(t, "stackvps_rollups_freshness_seconds", ru)
		require.False(t, math.IsNaN(fresh))
		require.Positive(t, fresh, "the data set ends in the past")
	}
}

// materialization returns the hypertable behind a continuous aggregate, or
// the rollup table itself on plain PostgreSQL: where a test can corrupt a
// bucket on purpose.
// watermark returns ru's watermark (plain PostgreSQL): the view reads the
// materialized table before it and aggregates live from it.
func (e *rollupEnv) watermark(t *testing.T, ru timescale.Rollup) time.Time {
	t.Helper()
	var wm time.Time
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT stackvps_rollup_watermark($1)`, string(ru)).Scan(&wm))
	return wm.UTC()
}

func (e *rollupEnv) materialization(t *testing.T, ru timescale.Rollup) string {
	t.Helper()
	if e.mode != timescale.ModeTimescale {
		return ru.Table() + "_materialized"
	}
	var schema, name string
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT materialization_hypertable_schema, materialization_hypertable_name
		FROM timescaledb_information.continuous_aggregates WHERE view_schema = current_schema() AND view_name = $1`, ru.Table()).Scan(&schema, &name))
	return pgx.Identifier{schema, name}.Sanitize()
}

func TestRollupsRefreshOnlyTouchedBucketsIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	ctx := context.Background()
	t0 := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC) // 08:00 in Santiago
	var rows []timescale.Row
	for i := range 240 { // four hours, one reading a minute
		rows = append(rows, timescale.Row{Time: t0.Add(time.Duration(i) * time.Minute), Point: "P1", Variable: "flow", Value: float64(i)})
	}
	e.write(t, rows)
	e.pass(t)
	e.requireRollupsMatch(t, "America/Santiago")
	before := map[timescale.Rollup]float64{}
	for _, ru := range timescale.Rollups() {
		before[ru] = e.metric(t, "stackvps_rollups_refreshes_total", ru)
	}

	// Corrupt, behind the refresher's back, a minute and an hour far from
	// what the late reading below touches.
	corruptM, corruptH := t0.Add(10*time.Minute), t0
	_, err := e.pool.Exec(ctx, `UPDATE `+e.materialization(t, timescale.Rollup1m)+` SET max = -1 WHERE bucket = $1`, corruptM)
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `UPDATE `+e.materialization(t, timescale.Rollup1h)+` SET max = -1 WHERE bucket = $1`, corruptH)
	require.NoError(t, err)

	// A late reading in the last hour.
	late := t0.Add(200*time.Minute + 30*time.Second)
	e.write(t, []timescale.Row{{Time: late, Point: "P1", Variable: "flow", Value: 1000}})
	e.pass(t)

	var maxM, maxH, maxLate, maxLateH float64
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT max FROM readings_1m WHERE point = 'P1' AND bucket = $1`, corruptM).Scan(&maxM))
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT max FROM readings_1h WHERE point = 'P1' AND bucket = $1`, corruptH).Scan(&maxH))
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT max FROM readings_1m WHERE point = 'P1' AND bucket = $1`, late.Truncate(time.Minute)).Scan(&maxLate))
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT max FROM readings_1h WHERE point = 'P1' AND bucket = $1`, late.Truncate(time.Hour)).Scan(&maxLateH))
	require.Equal(t, -1.0, maxM, "a minute the late reading did not touch is not recomputed")
	require.Equal(t, -1.0, maxH, "an hour the late reading did not touch is not recomputed")
	require.Equal(t, 1000.0, maxLate, "the touched minute is recomputed")
	require.Equal(t, 1000.0, maxLateH, "the touched hour is recomputed")
	for _, ru := range timescale.Rollups() {
		require.Equal(t, before[ru]+1, e.metric(t, "stackvps_rollups_refreshes_total", ru), "one refresh of %s", ru)
	}
	if e.mode == timescale.ModePostgres {
		// Exactly one row of each rollup changed: the touched bucket.
		var changed int64
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT stackvps_refresh_rollup('1m', $1, $2)`, late, late.Add(time.Second)).Scan(&changed))
		require.Zero(t, changed, "refreshing an up-to-date bucket writes nothing")
		_, err = e.pool.Exec(ctx, `UPDATE readings SET value = 7 WHERE time = $1`, late)
		require.NoError(t, err)
		// 1h reads readings_1m, not readings: until 1m is refreshed it
		// sees the corrupted minute's hour fixed (from the other minutes)
		// and not the changed reading.
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT stackvps_refresh_rollup('1h', $1, $2)`, t0, t0.Add(4*time.Hour)).Scan(&changed))
		require.Equal(t, int64(1), changed, "the corrupted hour, recomputed from its minutes")
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT stackvps_refresh_rollup('1m', $1, $2)`, t0, t0.Add(4*time.Hour)).Scan(&changed))
		require.Equal(t, int64(2), changed, "the corrupted minute and the changed one, no other")
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT stackvps_refresh_rollup('1h', $1, $2)`, t0, t0.Add(4*time.Hour)).Scan(&changed))
		require.Equal(t, int64(1), changed, "the changed hour, no other")
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT max FROM readings_1h WHERE point = 'P1' AND bucket = $1`, corruptH).Scan(&maxH))
		require.Equal(t, 59.0, maxH)
	}
}

func TestRollupsCoalesceTouchesIntegration(t *testing.T) {
	const delay = 1500 * time.Millisecond
	e := newRollupEnv(t, func(c *config.Rollups) { c.RefreshDelay = config.Duration(delay) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Run's first pass (for what a previous run left) has happened.
	require.Eventually(t, func() bool { return hasMetric(t, e.reg, "stackvps_rollups_pending_ranges") }, 10*time.Second, 10*time.Millisecond)

	// A burst of 100 small late writes in one hour of one day, faster than
	// the delay.
	t0 := time.Date(2026, 6, 10, 14, 0, 0, 0, time.UTC)
	start := time.Now()
	for i := range 100 {
		tm := t0.Add(time.Duration(i%40)*time.Minute + time.Duration(i)*time.Second)
		e.write(t, []timescale.Row{{Time: tm, Point: "P1", Variable: "flow", Value: float64(i)}})
	}
	burst := time.Since(start)
	t.Logf("100 writes in %s", burst)
	require.Less(t, burst, delay, "the burst must fit in the delay for this test to mean something")
	require.Eventually(t, func() bool { return e.metric(t, "stackvps_rollups_refreshes_total", timescale.Rollup1d) >= 1 },
		10*time.Second, 20*time.Millisecond)
	time.Sleep(delay / 2)
	for _, ru := range timescale.Rollups() {
		require.Equal(t, 1.0, e.metric(t, "stackvps_rollups_refreshes_total", ru), "100 touches, one refresh of %s", ru)
	}
	e.requireRollupsMatch(t, "America/Santiago")

	// A steady stream for 6 s: about one pass per delay, not one per
	// write.
	const stream = 6 * time.Second
	start = time.Now()
	writes := 0
	for time.Since(start) < stream {
		tm := t0.Add(time.Duration(writes%50)*time.Minute + 30*time.Second + time.Duration(writes)*time.Millisecond)
		e.write(t, []timescale.Row{{Time: tm, Point: "P2", Variable: "flow", Value: float64(writes)}})
		writes++
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(delay + delay/2)
	n := e.metric(t, "stackvps_rollups_refreshes_total", timescale.Rollup1m) - 1
	t.Logf("%d writes in %s made %.0f refreshes of readings_1m (delay %s)", writes, stream, n, delay)
	require.Greater(t, writes, 100)
	require.LessOrEqual(t, n, float64(stream/delay)+2, "at most about one refresh per delay")
	require.GreaterOrEqual(t, n, 2.0)
	e.requireRollupsMatch(t, "America/Santiago")

	// Stopping makes a final pass for what is still pending.
	e.write(t, []timescale.Row{{Time: t0.Add(59 * time.Minute), Point: "P3", Variable: "level", Value: 3}})
	cancel()
	require.NoError(t, <-done)
	done <- nil // for the cleanup
	var n3 int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM readings_1h WHERE point = 'P3'`).Scan(&n3))
	require.Equal(t, 1, n3)
}

func TestRollupsWriterRecordsTouchedRangesIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	ctx := testenv.Context(t, time.Minute)
	var hooked [][2]time.Time
	e.w.OnStored(func(from, to time.Time) { hooked = append(hooked, [2]time.Time{from.UTC(), to.UTC()}) })
	ranges := func() [][2]time.Time {
		rows, err := e.pool.Query(ctx, `SELECT from_ts, to_ts FROM rollup_invalidations ORDER BY from_ts`)
		require.NoError(t, err)
		var out [][2]time.Time
		var a, b time.Time
		_, err = pgx.ForEachRow(rows, []any{&a, &b}, func() error { out = append(out, [2]time.Time{a.UTC(), b.UTC()}); return nil })
		require.NoError(t, err)
		return out
	}
	jan := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	mar := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	row := func(tm time.Time) timescale.Row {
		return timescale.Row{Time: tm, Point: "P1", Variable: "flow", Value: 1}
	}
	// A backlog from January and a reading of March in one batch: two
	// ranges, not the two months between.
	e.write(t, []timescale.Row{row(jan.Add(30 * time.Minute)), row(mar), row(jan)})
	got := ranges()
	require.Len(t, got, 2)
	require.False(t, got[0][0].After(jan))
	require.True(t, got[0][1].After(jan.Add(30*time.Minute)))
	require.Less(t, got[0][1].Sub(got[0][0]), 31*time.Minute)
	require.Less(t, got[1][1].Sub(got[1][0]), time.Millisecond)
	require.Equal(t, got, hooked)

	// A replay with one new reading (the merge path): only the new one's
	// range is recorded.
	_, err := e.pool.Exec(ctx, `DELETE FROM rollup_invalidations`)
	require.NoError(t, err)
	hooked = nil
	jun := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	e.write(t, []timescale.Row{row(jan), row(mar), row(jun)})
	got = ranges()
	require.Len(t, got, 1)
	require.False(t, got[0][0].After(jun))
	require.True(t, got[0][1].After(jun))
	require.Less(t, got[0][1].Sub(got[0][0]), time.Millisecond)
	require.Equal(t, got, hooked)

	// A pure replay stores nothing and records nothing.
	hooked = nil
	e.write(t, []timescale.Row{row(jan), row(jun)})
	require.Len(t, ranges(), 1)
	require.Empty(t, hooked)
}

func hasMetric(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return true
		}
	}
	return false
}

func TestRollupsRecoverAfterCrashIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	// Batches committed, then the process dies before refreshing: the
	// invalidations are in the database, the in-memory touches are lost.
	for _, b := range batches(dataSet(), 200) {
		e.write(t, b)
	}
	var left int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM rollup_invalidations`).Scan(&left))
	require.Positive(t, left)

	ctx := testenv.Context(t, time.Minute)
	r2, err := timescale.NewRefresher(ctx, e.pool, timescale.RefresherConfig{Rollups: e.cfg, Registerer: prometheus.NewRegistry(), Log: quiet})
	require.NoError(t, err)
	require.NoError(t, r2.Pass(ctx))
	e.requireRollupsMatch(t, "America/Santiago")
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM rollup_invalidations`).Scan(&left))
	require.Zero(t, left)
}

func TestRollupsDayTimezoneChangeIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	for _, b := range batches(dataSet(), 300) {
		e.write(t, b)
	}
	e.pass(t)
	e.requireRollupsMatch(t, "America/Santiago")

	ctx := testenv.Context(t, time.Minute)
	cfg := e.cfg
	cfg.DayTimezone = "Europe/Madrid"
	require.NoError(t, timescale.ApplyPolicies(ctx, e.pool, cfg, quiet))
	zone, err := timescale.DayTimezone(ctx, e.pool)
	require.NoError(t, err)
	require.Equal(t, "Europe/Madrid", zone)
	// Again: nothing to do.
	changed, err := timescale.SetDayTimezone(ctx, e.pool, "Europe/Madrid", quiet)
	require.NoError(t, err)
	require.False(t, changed)

	r2, err := timescale.NewRefresher(ctx, e.pool, timescale.RefresherConfig{Rollups: cfg, Registerer: prometheus.NewRegistry(), Log: quiet})
	require.NoError(t, err)
	require.NoError(t, r2.Pass(ctx))
	requireSameAgg(t, expected(t, e.pool, timescale.Rollup1d, "Europe/Madrid"), stored(t, e.pool, timescale.Rollup1d), "readings_1d in Madrid")
	e.requireRollupsMatch(t, "Europe/Madrid")

	// The refresher that was running follows the new zone at its next pass.
	e.write(t, []timescale.Row{{Time: time.Date(2026, 5, 17, 23, 59, 0, 0, time.UTC), Point: "P1", Variable: "flow", Value: 99}})
	e.pass(t)
	e.requireRollupsMatch(t, "Europe/Madrid")

	_, err = timescale.SetDayTimezone(ctx, e.pool, "Mars/Olympus", quiet)
	require.ErrorContains(t, err, "rollups.day_timezone")
}

// Raw readings written into the first day of readings_1d and not refreshed
// yet do not block a zone change (they are not readings lost to
// retention): the change goes through, and the next pass brings every
// rollup, the new zone's days included, to what the raw readings hold.
func TestRollupsDayTimezoneChangeWithUnrefreshedWritesIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	for _, b := range batches(dataSet(), 300) {
		e.write(t, b)
	}
	e.pass(t)
	ctx := testenv.Context(t, time.Minute)
	var first time.Time
	var point, variable string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT time, point, variable FROM readings ORDER BY time LIMIT 1`).Scan(&first, &point, &variable))
	var dayStart time.Time
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT min(bucket) FROM readings_1d`).Scan(&dayStart))
	require.True(t, dayStart.Before(first), "the first day of readings_1d starts before the first raw reading")
	// Not refreshed: readings_1d counts fewer readings in that day than
	// the raw table now holds.
	e.write(t, []timescale.Row{{Time: first.Add(time.Microsecond), Point: point, Variable: variable, Value: 7}})

	changed, err := timescale.SetDayTimezone(ctx, e.pool, "Europe/Madrid", quiet)
	require.NoError(t, err)
	require.True(t, changed)
	r2, err := timescale.NewRefresher(ctx, e.pool, timescale.RefresherConfig{Rollups: e.cfg, Registerer: prometheus.NewRegistry(), Log: quiet})
	require.NoError(t, err)
	require.NoError(t, r2.Pass(ctx))
	e.requireRollupsMatch(t, "Europe/Madrid")
}

func TestRollupsRawRetentionIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	if e.mode != timescale.ModePostgres {
		t.Skip("plain PostgreSQL drops partitions itself; TimescaleDB uses its retention policy (TestRollupsTimescalePoliciesIntegration)")
	}
	ctx := testenv.Context(t, time.Minute)
	now := time.Now().UTC()
	month := func(back int) time.Time {
		return time.Date(now.Year(), now.Month()-time.Month(back), 1, 0, 0, 0, 0, time.UTC)
	}
	// Readings mid-month, 1 to 5 months back.
	for back := 1; back <= 5; back++ {
		var rows []timescale.Row
		for i := range 10 {
			rows = append(rows, timescale.Row{Time: month(back).AddDate(0, 0, 14).Add(time.Duration(i) * time.Hour), Point: "P1", Variable: "flow", Value: float64(back*100 + i)})
		}
		e.write(t, rows)
	}
	e.pass(t)
	before := stored(t, e.pool, timescale.Rollup1d)

	// Unsafe settings are refused and change nothing.
	_, err := timescale.DropOldPartitions(ctx, e.pool, 10*24*time.Hour, quiet)
	require.ErrorIs(t, err, timescale.ErrUnsafeRetention)
	bad := e.cfg
	bad.RawRetention = config.Duration(20 * 24 * time.Hour)
	require.ErrorIs(t, timescale.ApplyPolicies(ctx, e.pool, bad, quiet), timescale.ErrUnsafeRetention)
	bad.RawRetention = config.Duration(60 * 24 * time.Hour)
	bad.CompressAfter = config.Duration(90 * 24 * time.Hour)
	require.ErrorContains(t, timescale.ApplyPolicies(ctx, e.pool, bad, quiet), "rollups.compress_after")
	require.Equal(t, 50, count(t, e.pool, ""))

	// 75 days: partitions that ended more than 75 days ago go, whole.
	retention := 75 * 24 * time.Hour
	cfg := e.cfg
	cfg.RawRetention = config.Duration(retention)
	require.NoError(t, timescale.ApplyPolicies(ctx, e.pool, cfg, quiet))
	cutoff := now.Add(-retention)
	kept := 0
	for back := 1; back <= 5; back++ {
		end := month(back - 1)
		name := "readings_p" + month(back).Format("200601")
		var exists bool
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists))
		require.Equal(t, end.After(cutoff), exists, "partition %s ending %s, cutoff %s", name, end, cutoff)
		if exists {
			kept += 10
		}
	}
	require.Equal(t, kept, count(t, e.pool, ""))
	require.Less(t, kept, 50)
	// Idempotent.
	dropped, err := timescale.DropOldPartitions(ctx, e.pool, retention, quiet)
	require.NoError(t, err)
	require.Empty(t, dropped)

	// The rollups of the dropped months stay, even when a late reading
	// lands in one of them and is refreshed.
	requireSameAgg(t, before, stored(t, e.pool, timescale.Rollup1d), "readings_1d after retention")
	reg := prometheus.NewRegistry()
	r2, err := timescale.NewRefresher(ctx, e.pool, timescale.RefresherConfig{Rollups: cfg, Registerer: reg, Log: quiet})
	require.NoError(t, err)
	e.w.OnStored(r2.Touch)
	old := month(5).AddDate(0, 0, 14).Add(30 * time.Minute)
	e.write(t, []timescale.Row{{Time: old, Point: "P1", Variable: "flow", Value: -5}})
	require.NoError(t, r2.Pass(ctx))
	requireSameAgg(t, before, stored(t, e.pool, timescale.Rollup1d), "readings_1d after a late reading into a dropped month")
	require.Positive(t, gathered(t, reg, "stackvps_rollups_skipped_total", timescale.Rollup1d))
	// Even a direct call leaves buckets before the retention floor alone.
	var changed int64
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT stackvps_refresh_rollup('1h', $1, $2)`, month(5), month(3)).Scan(&changed))
	require.Zero(t, changed)

	// And the day zone can no longer change: days lost their raw readings.
	_, err = timescale.SetDayTimezone(ctx, e.pool, "UTC", quiet)
	require.ErrorIs(t, err, timescale.ErrZoneChangeUnsafe)
}

func TestRollupsTimescalePoliciesIntegration(t *testing.T) {
	pool := testenv.Postgres(t)
	testenv.RequireTimescale(t, pool)
	ctx := testenv.Context(t, 2*time.Minute)
	_, err := timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	cfg := config.Default().Rollups
	cfg.CompressAfter = config.Duration(7 * 24 * time.Hour)
	cfg.RawRetention = config.Duration(60 * 24 * time.Hour)
	require.NoError(t, timescale.ApplyPolicies(ctx, pool, cfg, quiet))

	jobs := func() map[string]string {
		// The jobs view names a continuous aggregate's job by the view.
		rows, err := pool.Query(ctx, `SELECT hypertable_name || ':' || proc_name, job_id::text || ' ' || config::text
			FROM timescaledb_information.jobs WHERE hypertable_schema = current_schema()`)
		require.NoError(t, err)
		out := map[string]string{}
		var k, v string
		_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error { out[k] = v; return nil })
		require.NoError(t, err)
		return out
	}
	first := jobs()
	t.Logf("jobs: %v", first)
	require.Contains(t, first, "readings:policy_compression")
	require.Contains(t, first["readings:policy_retention"], `"drop_after": "60 days"`)
	var refreshJobs []int
	rows, err := pool.Query(ctx, `SELECT job_id FROM timescaledb_information.jobs
		WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_schema = current_schema() ORDER BY hypertable_name`)
	require.NoError(t, err)
	refreshJobs, err = pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	require.Len(t, refreshJobs, 3)

	// Idempotent: the same jobs.
	require.NoError(t, timescale.ApplyPolicies(ctx, pool, cfg, quiet))
	require.Equal(t, first, jobs())

	// The safety-net policies run (by hand: background workers may not).
	_, err = pool.Exec(ctx, `INSERT INTO readings (time, point, variable, value) SELECT now() - i * interval '1 minute', 'P', 'flow', i FROM generate_series(1, 120) i`)
	require.NoError(t, err)
	for _, id := range refreshJobs {
		_, err := pool.Exec(ctx, fmt.Sprintf(`CALL run_job(%d)`, id))
		require.NoError(t, err, "run_job(%d)", id)
	}
	_, err = pool.Exec(ctx, `ALTER MATERIALIZED VIEW readings_1m SET (timescaledb.materialized_only = true)`)
	require.NoError(t, err)
	var materialized int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM readings_1m`).Scan(&materialized))
	require.GreaterOrEqual(t, materialized, 100)

	// Compression and retention jobs run too.
	_, err = pool.Exec(ctx, `INSERT INTO readings (time, point, variable, value) VALUES (now() - interval '20 days', 'P', 'flow', 1)`)
	require.NoError(t, err)
	var compressID, retentionID int
	require.NoError(t, pool.QueryRow(ctx, `SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression' AND hypertable_schema = current_schema()`).Scan(&compressID))
	require.NoError(t, pool.QueryRow(ctx, `SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention' AND hypertable_schema = current_schema()`).Scan(&retentionID))
	_, err = pool.Exec(ctx, fmt.Sprintf(`CALL run_job(%d)`, compressID))
	require.NoError(t, err)
	_, err = pool.Exec(ctx, fmt.Sprintf(`CALL run_job(%d)`, retentionID))
	require.NoError(t, err)
	var compressedChunks int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings' AND is_compressed`).Scan(&compressedChunks))
	require.Equal(t, 1, compressedChunks)

	// A new retention replaces the job; 0 removes compression and retention.
	cfg.RawRetention = config.Duration(90 * 24 * time.Hour)
	require.NoError(t, timescale.ApplyPolicies(ctx, pool, cfg, quiet))
	require.Contains(t, jobs()["readings:policy_retention"], `"drop_after": "90 days"`)
	cfg.RawRetention, cfg.CompressAfter = 0, 0
	require.NoError(t, timescale.ApplyPolicies(ctx, pool, cfg, quiet))
	require.NotContains(t, jobs(), "readings:policy_retention")
	require.NotContains(t, jobs(), "readings:policy_compression")

	// A refresh policy widened by hand beyond the retention is refused.
	_, err = pool.Exec(ctx, `SELECT alter_job(job_id, config => jsonb_set(config, '{start_offset}', '"120 days"'))
		FROM timescaledb_information.jobs WHERE job_id = $1`, refreshJobs[0])
	require.NoError(t, err)
	cfg.RawRetention = config.Duration(60 * 24 * time.Hour)
	require.ErrorIs(t, timescale.ApplyPolicies(ctx, pool, cfg, quiet), timescale.ErrUnsafeRetention)
	require.ErrorIs(t, timescale.ApplyPolicies(ctx, pool, config.Rollups{DayTimezone: "America/Santiago", RefreshDelay: cfg.RefreshDelay,
		RawRetention: config.Duration(10 * 24 * time.Hour)}, quiet), timescale.ErrUnsafeRetention)
}

// TestRollupsBucketsMatchDatabaseIntegration checks the refresher's bucket
// arithmetic against the database's for every day of 2020-2030 in zones
// with midnight DST changes, since on TimescaleDB a refresh window that
// starts or ends off a bucket boundary loses that bucket.
func TestRollupsBucketsMatchDatabaseIntegration(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, time.Minute)
	for _, zone := range []string{"America/Santiago", "America/Havana", "America/Asuncion", "Asia/Beirut", "Europe/Madrid", "Asia/Kolkata", "UTC"} {
		rows, err := pool.Query(ctx, `SELECT t, date_trunc('day', t AT TIME ZONE $1) AT TIME ZONE $1,
			(date_trunc('day', t AT TIME ZONE $1) + interval '1 day') AT TIME ZONE $1
			FROM generate_series('2020-01-01 00:00+00'::timestamptz, '2031-01-01', interval '5 hours 17 minutes') t`, zone)
		require.NoError(t, err)
		var tm, floor, next time.Time
		n := 0
		_, err = pgx.ForEachRow(rows, []any{&tm, &floor, &next}, func() error {
			f, c := timescale.DayBucket(zone, tm)
			if !f.Equal(floor) || !c.Equal(next) {
				return fmt.Errorf("%s: %s: got [%s, %s), database [%s, %s)", zone, tm, f.UTC(), c.UTC(), floor.UTC(), next.UTC())
			}
			n++
			return nil
		})
		require.NoError(t, err)
		require.Greater(t, n, 10000)
	}
}

func TestRollupsRangeSet(t *testing.T) {
	at := func(m int) time.Time { return time.Date(2026, 1, 1, 0, m, 0, 0, time.UTC) }
	cases := []struct {
		name  string
		gap   time.Duration
		limit int
		add   [][2]int
		want  [][2]int
	}{
		{"disjoint sorted", 0, 10, [][2]int{{5, 6}, {1, 2}, {9, 10}}, [][2]int{{1, 2}, {5, 6}, {9, 10}}},
		{"overlap and adjacent merge", 0, 10, [][2]int{{1, 3}, {2, 5}, {5, 6}, {8, 9}}, [][2]int{{1, 6}, {8, 9}}},
		{"one spanning several", 0, 10, [][2]int{{1, 2}, {4, 5}, {7, 8}, {0, 9}}, [][2]int{{0, 9}}},
		{"close ranges merge within the gap", 2 * time.Minute, 10, [][2]int{{1, 2}, {4, 5}, {10, 11}}, [][2]int{{1, 5}, {10, 11}}},
		{"bounded: the closest merge", 0, 3, [][2]int{{0, 1}, {10, 11}, {13, 14}, {30, 31}}, [][2]int{{0, 1}, {10, 14}, {30, 31}}},
		{"empty ignored", 0, 10, [][2]int{{3, 3}, {5, 4}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := timescale.NewRangeSet(tc.gap, tc.limit)
			for _, a := range tc.add {
				s.Add(at(a[0]), at(a[1]))
			}
			var got [][2]int
			for _, r := range s.Ranges() {
				got = append(got, [2]int{int(r[0].Sub(at(0)).Minutes()), int(r[1].Sub(at(0)).Minutes())})
			}
			require.Equal(t, tc.want, got)
		})
	}
	t.Run("remove", func(t *testing.T) {
		s := timescale.NewRangeSet(0, 10)
		s.Add(at(0), at(10))
		s.Add(at(20), at(30))
		s.Remove(at(5), at(25))
		got := s.Ranges()
		require.Equal(t, [][2]time.Time{{at(0), at(5)}, {at(25), at(30)}}, got)
	})
	t.Run("bounded under random load", func(t *testing.T) {
		s := timescale.NewRangeSet(0, 64)
		rng := rand.New(rand.NewPCG(1, 2))
		var added [][2]time.Time
		for range 5000 {
			m := rng.IntN(100000)
			s.Add(at(m), at(m+1))
			added = append(added, [2]time.Time{at(m), at(m + 1)})
		}
		rs := s.Ranges()
		require.LessOrEqual(t, len(rs), 64)
		require.True(t, sort.SliceIsSorted(rs, func(i, j int) bool { return rs[i][0].Before(rs[j][0]) }))
		for _, a := range added { // nothing is ever lost
			i := sort.Search(len(rs), func(i int) bool { return rs[i][1].After(a[0]) })
			require.Less(t, i, len(rs))
			require.False(t, rs[i][0].After(a[0]))
			require.False(t, rs[i][1].Before(a[1]))
		}
	})
}

// A pass that took long rests three times its duration before the next,
// so refreshing takes at most a quarter of the time; short passes wait the
// refresh delay, which coalesces the touches.
func TestRollupsPassDelay(t *testing.T) {
	const delay = 5 * time.Second
	for _, tc := range []struct {
		name        string
		last, since time.Duration
		want        time.Duration
	}{
		{"first pass", 0, time.Hour, delay},
		{"short pass", 100 * time.Millisecond, 0, delay},
		{"long pass, touched at once", 3 * time.Second, 0, 9 * time.Second},
		{"long pass, touched later", 3 * time.Second, 2 * time.Second, 7 * time.Second},
		{"long pass, rested enough", 3 * time.Second, 20 * time.Second, delay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, timescale.PassDelay(delay, tc.last, tc.since))
		})
	}
}

package timescale_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// testClock is a refresher clock the test sets and moves, safe to read
// from other goroutines.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.Set(time.Now())
	return c
}

func (c *testClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) Set(at time.Time)    { c.ns.Store(at.UnixNano()) }
func (c *testClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// TestRollupsRealTimeIntegration: on plain PostgreSQL readings_1m, _1h and
// _1d are views that aggregate live past their watermarks (migration 0011),
// so readings of the open minute, hour and day show at once, before any
// pass; a pass materializes a bucket once, after it closed, and never
// recomputes the open one; late readings below a watermark are refreshed as
// before.
func TestRollupsRealTimeIntegration(t *testing.T) {
	clock := newTestClock()
	e := newRollupEnvAt(t, nil, clock.Now)
	if e.mode != timescale.ModePostgres {
		t.Skip("plain PostgreSQL only: on TimescaleDB real-time aggregation is the extension's (materialized_only = false), and requireRollupsMatch checks the materialized part there")
	}
	ctx := context.Background()
	zone := e.cfg.DayTimezone
	settle := max(e.cfg.RefreshDelay.Std(), 5*time.Second)
	wm := e.watermark(t, timescale.Rollup1m) // the current minute, set by the migration
	counters := func() (advances, refreshes1m float64) {
		return testenv.Metric(t, e.reg, "stackvps_rollups_advances_total", nil),
			e.metric(t, "stackvps_rollups_refreshes_total", timescale.Rollup1m)
	}
	materializedFrom := func(ru timescale.Rollup, from time.Time) int {
		var n int
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM `+e.materialization(t, ru)+` WHERE bucket >= $1`, from).Scan(&n))
		return n
	}
	readings := func(minute time.Time, value float64) []timescale.Row {
		var rows []timescale.Row
		for _, p := range []string{"P1", "P2", "P3"} {
			for _, v := range []string{"flow", "level"} {
				for s := 5; s < 60; s += 20 {
					rows = append(rows, timescale.Row{Time: minute.Add(time.Duration(s) * time.Second), Point: p, Variable: v,
						Value: value + float64(s), Device: "dev-" + p})
				}
			}
		}
		return rows
	}

	// Readings of the open minute and the next: in the rollups before any
	// pass.
	e.write(t, append(readings(wm, 10), readings(wm.Add(time.Minute), 20)...))
	e.requireRollupsMatch(t, zone)

	// A pass inside the open minute refreshes nothing.
	clock.Set(wm.Add(30 * time.Second))
	e.pass(t)
	adv, ref := counters()
	require.Zero(t, adv, "no minute closed yet")
	require.Zero(t, ref, "the open minute is not recomputed")
	require.Zero(t, materializedFrom(timescale.Rollup1m, wm))

	// The first minute closes: one advance materializes it.
	clock.Set(wm.Add(time.Minute + settle + time.Second))
	e.pass(t)
	require.Equal(t, wm.Add(time.Minute), e.watermark(t, timescale.Rollup1m))
	adv, ref = counters()
	require.Equal(t, 1.0, adv)
	require.Zero(t, ref)
	require.Equal(t, 6, materializedFrom(timescale.Rollup1m, wm), "the closed minute's 6 series")
	e.requireRollupsMatch(t, zone)

	// More readings of the open minute: passes recompute nothing, the
	// views show them.
	e.write(t, readings(wm.Add(time.Minute+time.Second), 30))
	e.pass(t)
	e.pass(t)
	adv, ref = counters()
	require.Equal(t, 1.0, adv)
	require.Zero(t, ref)
	e.requireRollupsMatch(t, zone)

	// A late reading in the materialized minute is refreshed, once.
	e.write(t, []timescale.Row{{Time: wm.Add(59 * time.Second), Point: "P1", Variable: "flow", Value: -5, Device: "dev-P1"}})
	e.pass(t)
	_, ref = counters()
	require.Equal(t, 1.0, ref)
	e.requireRollupsMatch(t, zone)

	// After the local day ends, its hours and the day are materialized too,
	// advanced in pieces of at most a day of minutes.
	_, dayEnd := timescale.DayBucket(zone, wm)
	clock.Set(dayEnd.Add(time.Hour + settle + time.Second))
	e.pass(t)
	require.Equal(t, dayEnd.Add(time.Hour).Truncate(time.Hour), e.watermark(t, timescale.Rollup1h))
	require.Equal(t, dayEnd.UTC(), e.watermark(t, timescale.Rollup1d))
	e.requireRollupsMatch(t, zone) // every reading is below the watermarks now
	for _, ru := range timescale.Rollups() {
		require.NotZero(t, materializedFrom(ru, wm.Add(-24*time.Hour)), "%s materialized", ru)
	}
	require.LessOrEqual(t, e.metric(t, "stackvps_rollups_freshness_seconds", timescale.Rollup1m), (time.Minute + settle + time.Second).Seconds(),
		"freshness follows the watermark")
}

// TestRollupsRealTimeDaysIntegration: the live part of readings_1d (from
// the 1d watermark, the last local midnight) is exact in zones whose days
// start on a whole UTC hour, where it reads readings_1h, and in zones whose
// days do not, where it reads the minutes of the hour that holds midnight.
// Readings lie on both sides of that midnight (the day before is
// materialized, the day after live), and in the open minute.
func TestRollupsRealTimeDaysIntegration(t *testing.T) {
	for _, zone := range []string{"America/Santiago", "Asia/Kolkata", "Asia/Kathmandu"} {
		t.Run(zone, func(t *testing.T) {
			e := newRollupEnv(t, func(r *config.Rollups) { r.DayTimezone = zone })
			if e.mode != timescale.ModePostgres {
				t.Skip("plain PostgreSQL only: on TimescaleDB real-time aggregation is the extension's")
			}
			day := e.watermark(t, timescale.Rollup1d)
			start, _ := timescale.DayBucket(zone, day)
			require.Equal(t, start, day, "the 1d watermark is a local midnight")
			require.False(t, day.After(e.watermark(t, timescale.Rollup1h)), "and not after the 1h watermark")
			var rows []timescale.Row
			for i := -45; i < 45; i += 4 {
				for _, p := range []string{"P1", "P2"} {
					rows = append(rows, timescale.Row{Time: day.Add(time.Duration(i)*time.Minute + 17*time.Second), Point: p, Variable: "flow",
						Value: float64(i*i%97) + 0.25, Device: "dev-" + p})
				}
			}
			now := time.Now()
			rows = append(rows, timescale.Row{Time: now, Point: "P1", Variable: "flow", Value: 42, Device: "dev-P1"})
			e.write(t, rows)
			e.pass(t)
			e.requireRollupsMatch(t, zone)
			want := 0
			for k := range expected(t, e.pool, timescale.Rollup1d, zone) {
				if !k.Bucket.Before(day) {
					want++
				}
			}
			var live int
			require.NoError(t, e.pool.QueryRow(context.Background(),
				`SELECT count(*) FROM readings_1d WHERE bucket >= stackvps_rollup_watermark('1d')`).Scan(&live))
			require.GreaterOrEqual(t, live, 2, "P1 and P2 after midnight are live")
			require.Equal(t, want, live)
		})
	}
}

// TestRollupsOpenBucketsTimescaleIntegration: on TimescaleDB a pass leaves
// the open buckets to real-time aggregation and materializes them once
// they closed settle ago; the ranges it leaves pending are written back to
// rollup_invalidations, so a refresher that starts over (a crash, a
// restart) still materializes them.
func TestRollupsOpenBucketsTimescaleIntegration(t *testing.T) {
	clock := newTestClock()
	now := clock.Now
	e := newRollupEnvAt(t, nil, now)
	if e.mode != timescale.ModeTimescale {
		t.Skip("TimescaleDB only (the extension is not installed here): on plain PostgreSQL TestRollupsRealTimeIntegration covers the open buckets")
	}
	ctx := context.Background()
	zone := e.cfg.DayTimezone
	settle := max(e.cfg.RefreshDelay.Std(), 5*time.Second)
	minute := time.Now().UTC().Truncate(time.Minute)
	var rows []timescale.Row
	for _, p := range []string{"P1", "P2"} {
		for s := 5; s < 120; s += 10 {
			rows = append(rows, timescale.Row{Time: minute.Add(time.Duration(s) * time.Second), Point: p, Variable: "flow",
				Value: float64(s), Device: "dev-" + p})
		}
	}
	e.write(t, rows)
	materialized := func(ru timescale.Rollup) int { return len(e.materializedOnly(t, ru)) }

	// Inside the open minute: nothing is materialized, the rollups show it.
	clock.Set(minute.Add(30 * time.Second))
	e.pass(t)
	require.Zero(t, e.metric(t, "stackvps_rollups_refreshes_total", timescale.Rollup1m), "the open minute is not refreshed")
	for _, ru := range timescale.Rollups() {
		require.Zero(t, materialized(ru), "%s materialized nothing", ru)
		requireSameAgg(t, expected(t, e.pool, ru, zone), stored(t, e.pool, ru), ru.Table()+" (real-time)")
	}
	var named int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(DISTINCT rollup) FROM rollup_invalidations`).Scan(&named))
	require.Equal(t, 3, named, "the ranges of every rollup, written back by name")

	// A refresher that starts over, after the first minute closed: it
	// finds the written-back ranges and materializes that minute alone.
	reg := prometheus.NewRegistry()
	r2, err := timescale.NewRefresher(ctx, e.pool, timescale.RefresherConfig{Rollups: e.cfg, Registerer: reg, Log: quiet, Now: now})
	require.NoError(t, err)
	clock.Set(minute.Add(time.Minute + settle + time.Second))
	require.NoError(t, r2.Pass(ctx))
	require.Equal(t, 1.0, gathered(t, reg, "stackvps_rollups_refreshes_total", timescale.Rollup1m))
	require.Equal(t, 2, materialized(timescale.Rollup1m), "the closed minute of P1 and P2")
	if minute.Add(time.Minute).Truncate(time.Hour).Equal(minute.Truncate(time.Hour)) {
		require.Zero(t, materialized(timescale.Rollup1h), "the hour is open")
	}

	// Once the day closed, everything is materialized.
	_, dayEnd := timescale.DayBucket(zone, minute.Add(2*time.Minute))
	clock.Set(dayEnd.Add(time.Hour + settle + time.Second))
	require.NoError(t, r2.Pass(ctx))
	e.requireRollupsMatch(t, zone)
	var waiting int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM rollup_invalidations`).Scan(&waiting))
	require.Zero(t, waiting)
}

// TestRollupsUpgradeTo0011Integration: a database whose rollups were
// tables kept by the former refresher (migration 0010: every pass
// recomputed the open minute too), with readings in the open minute the
// last pass did not see, upgrades to views with watermarks, and the rollups
// match the readings after the next pass; nothing below a watermark is
// lost or counted twice.
func TestRollupsUpgradeTo0011Integration(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, time.Minute)
	mode, err := timescale.MigrateTo(ctx, pool, 10)
	require.NoError(t, err)
	if mode != timescale.ModePostgres {
		t.Skip("plain PostgreSQL only: migration 0011 changes nothing on TimescaleDB")
	}
	now := time.Now().UTC()
	insert := func(from, to time.Time, step time.Duration, value float64) {
		t.Helper()
		_, err := pool.Exec(ctx, `INSERT INTO readings (time, point, variable, value)
			SELECT t, p, 'flow', $4 + extract(epoch FROM t)::bigint % 97 FROM generate_series($1::timestamptz, $2::timestamptz, $3::interval) t,
			unnest(ARRAY['P1', 'P2']) p`, from, to, step, value)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO rollup_invalidations (from_ts, to_ts) VALUES ($1, $2)`, from, to.Add(time.Microsecond))
		require.NoError(t, err)
	}
	// 90 minutes up to now, refreshed (open buckets included) as the old
	// refresher did, in order.
	insert(now.Add(-90*time.Minute), now, 20*time.Second, 0)
	for _, ru := range timescale.Rollups() {
		_, err := pool.Exec(ctx, `SELECT stackvps_refresh_rollup($1, $2, $3)`, string(ru), now.Add(-2*time.Hour), now.Add(time.Minute))
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `DELETE FROM rollup_invalidations`)
	require.NoError(t, err)
	// Readings the last pass did not see, in the open minute and a late
	// one an hour back: their invalidation rows wait.
	insert(now.Add(time.Second), now.Add(20*time.Second), 7*time.Second, 1000)
	insert(now.Add(-61*time.Minute-time.Second), now.Add(-61*time.Minute-time.Second), time.Second, 2000)

	_, err = timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	cfg := config.Default().Rollups
	require.NoError(t, timescale.ApplyPolicies(ctx, pool, cfg, quiet))
	reg := prometheus.NewRegistry()
	r, err := timescale.NewRefresher(ctx, pool, timescale.RefresherConfig{Rollups: cfg, Registerer: reg, Log: quiet})
	require.NoError(t, err)
	require.NoError(t, r.Pass(ctx))
	e := &rollupEnv{pool: pool, mode: mode, reg: reg, cfg: cfg}
	e.requireRollupsMatch(t, cfg.DayTimezone)
}

// TestRollupsRealTimeConcurrentIntegration: while the writer stores
// readings and passes move the watermarks, every snapshot of the database
// counts each reading exactly once in each rollup (plain PostgreSQL): the
// views read the watermark and the materialized tables in one snapshot, and
// an advance moves both in one transaction. The refresher's clock runs 100
// times faster than the wall clock, over six minutes of it.
func TestRollupsRealTimeConcurrentIntegration(t *testing.T) {
	clock := newTestClock()
	now := clock.Now
	e := newRollupEnvAt(t, func(r *config.Rollups) {
		// settle = refresh_delay: 30 s of the fast clock, 300 ms of the
		// wall clock, far more than a batch takes to commit, so no reading
		// arrives late for a minute already materialized.
		r.RefreshDelay = config.Duration(30 * time.Second)
	}, now)
	if e.mode != timescale.ModePostgres {
		t.Skip("plain PostgreSQL only: on TimescaleDB real-time aggregation is the extension's")
	}
	start := e.watermark(t, timescale.Rollup1m).Add(10 * time.Second)
	clock.Set(start)
	end := start.Add(6 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 3)
	done := make(chan struct{})
	go func() { // the clock: 2 s every 20 ms
		defer close(done)
		for now().Before(end) {
			time.Sleep(20 * time.Millisecond)
			clock.Add(2 * time.Second)
		}
	}()
	go func() { // passes, as fast as they go
		for {
			select {
			case <-done:
				errs <- e.r.Pass(ctx)
				return
			default:
			}
			if err := e.r.Pass(ctx); err != nil {
				errs <- err
				return
			}
		}
	}()
	var written atomic.Int64
	go func() { // the writer: a batch of 4 readings at the clock's time
		for i := 0; ; i++ {
			select {
			case <-done:
				errs <- nil
				return
			default:
			}
			at := now().Add(time.Duration(i) * time.Microsecond)
			var rows []timescale.Row
			for _, p := range []string{"P1", "P2"} {
				for _, v := range []string{"flow", "level"} {
					rows = append(rows, timescale.Row{Time: at, Point: p, Variable: v, Value: float64(i % 50), Device: "dev-" + p})
				}
			}
			if err := e.tryWrite(rows); err != nil {
				errs <- err
				return
			}
			written.Add(int64(len(rows)))
		}
	}()
	checks := 0
	for {
		select {
		case <-done:
		default:
			var raw, m, h, d int64
			err := pgx.BeginTxFunc(ctx, e.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM readings),
					(SELECT coalesce(sum(count), 0) FROM readings_1m),
					(SELECT coalesce(sum(count), 0) FROM readings_1h),
					(SELECT coalesce(sum(count), 0) FROM readings_1d)`).Scan(&raw, &m, &h, &d)
			})
			require.NoError(t, err)
			require.Equal(t, []int64{raw, raw, raw}, []int64{m, h, d}, "readings counted once in 1m, 1h, 1d at %s", now())
			checks++
			continue
		}
		break
	}
	for range 2 {
		require.NoError(t, <-errs)
	}
	e.pass(t)
	t.Logf("%d snapshots checked, %d readings written over %s of the refresher's clock; 1m watermark %s",
		checks, written.Load(), end.Sub(start), e.watermark(t, timescale.Rollup1m))
	require.Greater(t, checks, 20)
	require.True(t, e.watermark(t, timescale.Rollup1m).After(start.Add(4*time.Minute)), "the watermarks moved during the run")
	e.requireRollupsMatch(t, e.cfg.DayTimezone)
}

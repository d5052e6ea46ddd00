package scheduler_test

import (
	"context"

	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
)

type tickRow struct {
	ScheduledFor time.Time
	Runner       string
	At           time.Time
}

func ticks(t *testing.T, pool *pgxpool.Pool, job string) []tickRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT scheduled_for, runner, at FROM ticks WHERE job = $1 ORDER BY scheduled_for, at`, job)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[tickRow])
	require.NoError(t, err)
	return out
}

// requireOncePerPeriod fails when a period ran twice; it returns the
// number of periods skipped between the first and the last.
func requireOncePerPeriod(t *testing.T, rows []tickRow, period time.Duration) int {
	t.Helper()
	seen := map[time.Time]string{}
	gaps := 0
	for i, r := range rows {
		if prev, dup := seen[r.ScheduledFor]; dup {
			t.Fatalf("period %s ran twice: by %s and by %s", r.ScheduledFor.UTC().Format(time.RFC3339Nano), prev, r.Runner)
		}
		seen[r.ScheduledFor] = r.Runner
		if i > 0 {
			gaps += int(r.ScheduledFor.Sub(rows[i-1].ScheduledFor)/period) - 1
		}
	}
	return gaps
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTwoReplicasIntegration runs two schedulers on separate connections:
// one leads, each period runs once, and when the leader stops the other
// takes over at once and goes on, still once per period.
func TestTwoReplicasIntegration(t *testing.T) {
	db := testenv.Database(t)
	p1, p2 := newPool(t, db), newPool(t, db)
	migrate(t, p1)
	_, err := p1.Exec(context.Background(), ticksDDL)
	require.NoError(t, err)
	sc := fastScheduler(map[string]config.SchedulerJob{
		"tick": {Schedule: "every 1s", Enabled: true},
		"slow": {Schedule: "every 1h", Enabled: false},
	})
	a := startReplica(t, p1, sc, "replica-a", tickJobs(p1, "replica-a", 0), nil)
	b := startReplica(t, p2, sc, "replica-b", tickJobs(p2, "replica-b", 0), nil)

	waitFor(t, 15*time.Second, "4 periods", func() bool { return len(ticks(t, p1, "tick")) >= 4 })
	require.Equal(t, 1.0, a.leader()+b.leader(), "exactly one leader")
	leader, follower := a, b
	if b.leader() == 1 {
		leader, follower = b, a
	}
	rows := ticks(t, p1, "tick")
	require.Equal(t, rows[0].Runner, rows[len(rows)-1].Runner, "one runner while the leader lives")
	require.Zero(t, follower.runs("tick", "succeeded"), "the follower ran nothing")

	stopped := time.Now()
	leader.stop()
	waitFor(t, 5*time.Second, "the follower to lead", func() bool { return follower.leader() == 1 })
	t.Logf("takeover after %s", time.Since(stopped))
	require.Less(t, time.Since(stopped), 3*time.Second)
	n := len(rows)
	waitFor(t, 15*time.Second, "3 more periods", func() bool { return len(ticks(t, p1, "tick")) >= n+3 })

	rows = ticks(t, p1, "tick")
	gaps := requireOncePerPeriod(t, rows, time.Second)
	require.LessOrEqual(t, gaps, 1, "at most the period of the handover may be skipped")
	require.NotEqual(t, rows[0].Runner, rows[len(rows)-1].Runner, "the other replica runs the later periods")

	var bad int
	require.NoError(t, p1.QueryRow(context.Background(),
		`SELECT count(*) FROM scheduler_runs WHERE job = 'tick' AND (status = 'failed' OR attempt <> 1)`).Scan(&bad))
	require.Zero(t, bad, "every period succeeded at its first attempt")
}

// TestMissedPeriodsAndDSTIntegration drives two replicas with a fake
// clock through the April 2026 DST change of America/Santiago and across
// an outage: each daily period runs once at its wall time, and after the
// outage only the latest missed period runs.
func TestMissedPeriodsAndDSTIntegration(t *testing.T) {
	db := testenv.Database(t)
	p1, p2 := newPool(t, db), newPool(t, db)
	migrate(t, p1)
	_, err := p1.Exec(context.Background(), ticksDDL)
	require.NoError(t, err)
	sc := fastScheduler(map[string]config.SchedulerJob{
		"tick": {Schedule: "daily 07:00", Enabled: true},
		"slow": {Schedule: "every 1h", Enabled: false},
	})
	clock := testenv.NewClock(time.Date(2026, 4, 3, 12, 0, 0, 0, time.UTC)) // 09:00 -03
	a := startReplica(t, p1, sc, "replica-a", tickJobs(p1, "replica-a", 0), clock.Now)
	b := startReplica(t, p2, sc, "replica-b", tickJobs(p2, "replica-b", 0), clock.Now)

	count := func() int { return len(ticks(t, p1, "tick")) }
	// First start: the latest past occurrence (today 07:00 -03) runs.
	waitFor(t, 10*time.Second, "the first period", func() bool { return count() == 1 })
	// Walk hour by hour through Apr 4 and 5 (clocks go back at 2026-04-05
	// 00:00 -03 to 23:00 -04).
	for at := clock.Now(); at.Before(time.Date(2026, 4, 6, 12, 0, 0, 0, time.UTC)); at = at.Add(time.Hour) {
		clock.Set(at)
		settle(t, a, b)
	}
	waitFor(t, 10*time.Second, "four daily periods", func() bool { return count() == 4 })
	settle(t, a, b)
	require.Equal(t, 4, claims(t, p1, "tick"), "no period beyond the four is claimed")
	rows := ticks(t, p1, "tick")
	require.Len(t, rows, 4)
	want := []time.Time{
		time.Date(2026, 4, 3, 10, 0, 0, 0, time.UTC), // 07:00 -03
		time.Date(2026, 4, 4, 10, 0, 0, 0, time.UTC), // 07:00 -03
		time.Date(2026, 4, 5, 11, 0, 0, 0, time.UTC), // 07:00 -04
		time.Date(2026, 4, 6, 11, 0, 0, 0, time.UTC),
	}
	for i, r := range rows {
		require.True(t, want[i].Equal(r.ScheduledFor), "period %d: want %s, got %s", i, want[i], r.ScheduledFor.UTC())
	}

	// An outage of three days: both replicas stop, the clock moves, one
	// comes back and runs only the latest missed period.
	a.stop()
	b.stop()
	clock.Set(time.Date(2026, 4, 9, 15, 0, 0, 0, time.UTC))
	c := startReplica(t, p2, sc, "replica-c", tickJobs(p2, "replica-c", 0), clock.Now)
	waitFor(t, 10*time.Second, "the latest missed period", func() bool { return count() == 5 })
	settle(t, c)
	require.Equal(t, 5, claims(t, p1, "tick"), "only the latest missed period is claimed")
	rows = ticks(t, p1, "tick")
	require.Len(t, rows, 5, "only the latest missed period runs")
	require.True(t, time.Date(2026, 4, 9, 11, 0, 0, 0, time.UTC).Equal(rows[4].ScheduledFor), "got %s", rows[4].ScheduledFor.UTC())
	require.Equal(t, 2.0, c.metric("stackvps_scheduler_skipped_periods_total", map[string]string{"job": "tick"}), "Apr 7 and 8 skipped")
}

package scheduler_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/stages/scheduler"
)

func TestRegistry(t *testing.T) {
	reg := scheduler.NewRegistry()
	job := func(context.Context, time.Time) error { return nil }
	require.NoError(t, reg.Register("daily_report", job))
	require.ErrorIs(t, reg.Register("daily_report", job), scheduler.ErrDuplicateJob)
	require.Error(t, reg.Register("Daily-Report", job))
	require.Error(t, reg.Register("nil_job", nil))
	require.Equal(t, []string{"daily_report"}, reg.Names())
}

// TestNewNamesTheKey: a job configured but not registered, or with a bad
// schedule, stops start-up with the key.
func TestNewNamesTheKey(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none") // never connects
	require.NoError(t, err)
	defer pool.Close()
	jobs := scheduler.NewRegistry()
	require.NoError(t, jobs.Register("health_check", func(context.Context, time.Time) error { return nil }))
	cases := []struct {
		name string
		jobs map[string]config.SchedulerJob
		want string
	}{
		{name: "unregistered job", jobs: map[string]config.SchedulerJob{"nightly": {Schedule: "daily 01:00", Enabled: true}},
			want: "scheduler.jobs.nightly: unknown job"},
		{name: "bad schedule", jobs: map[string]config.SchedulerJob{"health_check": {Schedule: "every hour", Enabled: true}},
			want: "scheduler.jobs.health_check.schedule: invalid schedule"},
		{name: "ok", jobs: map[string]config.SchedulerJob{"health_check": {Schedule: "*/5 * * * *", Enabled: true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := config.Default().Scheduler
			sc.Jobs = tc.jobs
			_, err := scheduler.New(scheduler.Config{Scheduler: sc},
				scheduler.Deps{Pool: pool, Jobs: jobs, Registerer: prometheus.NewRegistry(), Log: testLogger(t)})
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestLeaderStepsDownIntegration ends the leader's lock session from the
// server side (as a network failure or an administrator would): the leader
// notices within leader_check, steps down, and leadership is taken again;
// periods still run once.
func TestLeaderStepsDownIntegration(t *testing.T) {
	db := testenv.Database(t)
	p1, p2 := newPool(t, db), newPool(t, db)
	migrate(t, p1)
	ctx := context.Background()
	_, err := p1.Exec(ctx, ticksDDL)
	require.NoError(t, err)
	sc := fastScheduler(map[string]config.SchedulerJob{
		"tick": {Schedule: "every 1s", Enabled: true},
		"slow": {Schedule: "every 1h", Enabled: false},
	})
	a := startReplica(t, p1, sc, "replica-a", tickJobs(p1, "replica-a", 0), nil)
	b := startReplica(t, p2, sc, "replica-b", tickJobs(p2, "replica-b", 0), nil)
	waitFor(t, 15*time.Second, "2 periods", func() bool { return len(ticks(t, p1, "tick")) >= 2 })
	acquired := func() float64 {
		return a.metric("stackvps_scheduler_leadership_acquired_total", nil) + b.metric("stackvps_scheduler_leadership_acquired_total", nil)
	}
	require.Equal(t, 1.0, acquired())

	// The lock session of this schema's scheduler.
	var n int
	require.NoError(t, p1.QueryRow(ctx, `SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.granted AND l.objid::bigint = (hashtext('stackvps.scheduler.' || current_schema())::bigint & 4294967295)`).Scan(&n))
	require.Equal(t, 1, n, "one lock session terminated")
	waitFor(t, 10*time.Second, "leadership taken again", func() bool { return acquired() == 2 && a.leader()+b.leader() == 1 })
	before := len(ticks(t, p1, "tick"))
	waitFor(t, 10*time.Second, "2 more periods", func() bool { return len(ticks(t, p1, "tick")) >= before+2 })
	// A tick cancelled by the step-down fails and is retried by the next
	// leader: each period ran once per attempt, and only the interrupted
	// one needed a second.
	var mismatched, retried int
	require.NoError(t, p1.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE r.attempt <> (SELECT count(*) FROM ticks k WHERE k.job = r.job AND k.scheduled_for = r.scheduled_for)),
		count(*) FILTER (WHERE r.attempt > 1)
		FROM scheduler_runs r WHERE r.job = 'tick' AND r.status <> 'running'`).Scan(&mismatched, &retried))
	require.Zero(t, mismatched, "each attempt of each period ran once")
	require.LessOrEqual(t, retried, 1, "at most the interrupted period was retried")
}

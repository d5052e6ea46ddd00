package scheduler_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/scheduler"
)

// childName is the child process, a copy of the test binary, that runs a
// scheduler replica given a childConfig until it is killed.
const childName = "scheduler"

type childConfig struct {
	DatabaseURL string
	Runner      string
	Scheduler   config.Scheduler
	// SlowFor is how long the "slow" job runs.
	SlowFor time.Duration
}

func TestMain(m *testing.M) {
	testenv.RunChild(childName, childMain)
	goleak.VerifyTestMain(m)
}

// childMain runs a replica. Each line it logs names its runner: the
// children of a test all log to the test's log.
func childMain(cc childConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pool, err := pgxpool.New(ctx, cc.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("child", cc.Runner)
	s, err := scheduler.New(scheduler.Config{Scheduler: cc.Scheduler, Runner: cc.Runner, Tick: 50 * time.Millisecond},
		scheduler.Deps{Pool: pool, Jobs: tickJobs(pool, cc.Runner, cc.SlowFor), Registerer: prometheus.NewRegistry(), Log: log})
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// tickJobs are the jobs of the replica tests: each run appends a row to
// ticks, so a period run twice shows as two rows.
func tickJobs(pool *pgxpool.Pool, runner string, slowFor time.Duration) *scheduler.Registry {
	reg := scheduler.NewRegistry()
	record := func(job string, d time.Duration) scheduler.Job {
		return func(ctx context.Context, at time.Time) error {
			if _, err := pool.Exec(ctx, `INSERT INTO ticks (job, scheduled_for, runner) VALUES ($1, $2, $3)`, job, at, runner); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
				return nil
			}
		}
	}
	_ = reg.Register("tick", record("tick", 100*time.Millisecond))
	_ = reg.Register("slow", record("slow", slowFor))
	return reg
}

const ticksDDL = `CREATE TABLE ticks (job text NOT NULL, scheduled_for timestamptz NOT NULL, runner text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`

// fastScheduler is a scheduler section with short timings for tests.
func fastScheduler(jobs map[string]config.SchedulerJob) config.Scheduler {
	sc := config.Default().Scheduler
	sc.LeaderCheck = config.Duration(300 * time.Millisecond)
	sc.HeartbeatTimeout = config.Duration(2 * time.Second)
	sc.RetryAfter = config.Duration(500 * time.Millisecond)
	sc.Jobs = jobs
	return sc
}

// migrate applies the migrations. When a migration of another change in
// progress fails, the scheduler's own (0009) is applied alone so these
// tests do not depend on unrelated work.
func migrate(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	_, err := timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		return
	}
	t.Logf("full migration failed (%v); applying 0009_scheduler alone", err)
	migs, err := timescale.Migrations()
	require.NoError(t, err)
	var mode string
	require.NoError(t, pool.QueryRow(ctx, `SELECT mode FROM schema_migrations ORDER BY version LIMIT 1`).Scan(&mode))
	for _, m := range migs {
		if m.Version == 9 {
			_, err := pool.Exec(ctx, m.SQL(timescale.Mode(mode)))
			require.NoError(t, err)
		}
	}
}

// newPool opens another pool on the same database and schema.
func newPool(t *testing.T, db config.Database) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), db.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// replica is one in-process scheduler.
type replica struct {
	t      *testing.T
	s      *scheduler.Scheduler
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startReplica(t *testing.T, pool *pgxpool.Pool, sc config.Scheduler, runner string, jobs *scheduler.Registry, now func() time.Time) *replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := scheduler.New(scheduler.Config{Scheduler: sc, Runner: runner, Tick: 50 * time.Millisecond},
		scheduler.Deps{Pool: pool, Jobs: jobs, Registerer: reg, Log: testLogger(t), Now: now})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{t: t, s: s, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // later stops return at once
}

// metric returns the value of one of the replica's metrics.
func (r *replica) metric(name string, labels map[string]string) float64 {
	return testenv.Metric(r.t, r.reg, name, labels)
}

func (r *replica) leader() float64 { return r.metric("stackvps_scheduler_leader", nil) }

// passes returns the passes the replica has made over the schedules as
// the leader.
func (r *replica) passes() float64 {
	return r.metric("stackvps_scheduler_passes_total", nil)
}

// settle waits until the leader among rs has finished a pass over the
// schedules that began after the call: every period due at the clock's
// time by then is claimed (claims are made within the pass; the runs they
// start may still be going).
func settle(t *testing.T, rs ...*replica) {
	t.Helper()
	var leader *replica
	waitFor(t, 10*time.Second, "a leader", func() bool {
		for _, r := range rs {
			if r.leader() == 1 {
				leader = r
				return true
			}
		}
		return false
	})
	// The pass in progress may have read the clock before the call; the
	// one after it did not.
	base := leader.passes()
	waitFor(t, 10*time.Second, "two passes of the leader", func() bool { return leader.passes() >= base+2 })
}

// claims returns the periods of job claimed so far (running or finished).
func claims(t *testing.T, pool *pgxpool.Pool, job string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(DISTINCT scheduled_for) FROM scheduler_runs WHERE job = $1`, job).Scan(&n))
	return n
}

func (r *replica) runs(job, status string) float64 {
	return r.metric("stackvps_scheduler_runs_total", map[string]string{"job": job, "status": status})
}

// testLogger logs through t until the test ends, then drops.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// captureProducer acknowledges every record at once and keeps them.
type captureProducer struct {
	mu   sync.Mutex
	recs []pipeline.Record
}

func (p *captureProducer) Produce(_ context.Context, r pipeline.Record, ack func(error)) {
	p.mu.Lock()
	p.recs = append(p.recs, r)
	p.mu.Unlock()
	ack(nil)
}

func (p *captureProducer) records() []pipeline.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pipeline.Record(nil), p.recs...)
}

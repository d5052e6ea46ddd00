package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/stages/scheduler/schedule"
)

// Config configures a Scheduler.
type Config struct {
	// Scheduler is the scheduler section: jobs, zone, timings.
	Scheduler config.Scheduler
	// DrainTimeout is how long running jobs may take to finish once the
	// scheduler is stopping before they are cancelled. Default 30s.
	DrainTimeout time.Duration
	// Runner names this process in scheduler_runs.runner. Default
	// "<hostname>/<pid>".
	Runner string
	// Tick bounds the sleep between two evaluations of the schedules (the
	// loop otherwise sleeps until the next occurrence). Default 1s.
	Tick time.Duration
}

// Deps are what a Scheduler needs from the process.
type Deps struct {
	// Pool is the database; required. The leader lock is taken on a
	// connection of its own made from the pool's configuration.
	Pool *pgxpool.Pool
	// Jobs are the jobs that may be scheduled; required. Every job of
	// Config.Scheduler.Jobs must be registered.
	Jobs *Registry
	// Registerer receives the scheduler's metrics; required.
	Registerer prometheus.Registerer
	// Log is the scheduler's logger; required.
	Log *slog.Logger
	// Now is the clock schedules are evaluated on. Default time.Now. Run
	// bookkeeping (heartbeats, staleness, retries) uses the database's
	// clock, so replicas with skewed clocks agree.
	Now func() time.Time
}

// Scheduler runs the configured jobs while it holds the leader lock. See
// the package documentation.
type Scheduler struct {
	cfg   Config
	jobs  []*jobState
	pool  *pgxpool.Pool
	runs  *runs
	loc   *time.Location
	now   func() time.Time
	met   *metrics
	log   *slog.Logger
	check time.Duration
}

type jobState struct {
	name  string
	sched schedule.Schedule
	run   Job

	mu      sync.Mutex
	running bool
	// handled is the latest period found settled (run here or elsewhere).
	handled time.Time
	// recheck is when a waiting period is looked at again.
	recheck time.Time
}

// New validates cfg against the registry: every configured job must be
// registered, and its schedule must parse; errors name the key
// (scheduler.jobs.<name>.schedule).
func New(cfg Config, deps Deps) (*Scheduler, error) {
	if deps.Pool == nil || deps.Jobs == nil || deps.Registerer == nil || deps.Log == nil {
		return nil, errors.New("scheduler: pool, jobs, registerer and log are required")
	}
	sc := cfg.Scheduler
	loc, err := time.LoadLocation(sc.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("scheduler.time_zone: %w", err)
	}
	if sc.LeaderCheck <= 0 || sc.HeartbeatTimeout <= 0 || sc.RetryAfter <= 0 || sc.MaxAttempts < 1 {
		return nil, errors.New("scheduler: leader_check, heartbeat_timeout, retry_after and max_attempts must be positive")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Runner == "" {
		host, _ := os.Hostname()
		cfg.Runner = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	s := &Scheduler{cfg: cfg, pool: deps.Pool, runs: &runs{pool: deps.Pool}, loc: loc, now: deps.Now,
		log: deps.Log, check: sc.LeaderCheck.Std()}
	if s.now == nil {
		s.now = time.Now
	}
	names := make([]string, 0, len(sc.Jobs))
	for name := range sc.Jobs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		job, ok := deps.Jobs.get(name)
		if !ok {
			return nil, fmt.Errorf("scheduler.jobs.%s: unknown job (registered: %v)", name, deps.Jobs.Names())
		}
		spec := sc.JobSchedule(name)
		sched, err := schedule.Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("scheduler.jobs.%s.schedule: %w", name, err)
		}
		if !sc.Jobs[name].Enabled {
			s.log.Info("job disabled", "job", name)
			continue
		}
		s.jobs = append(s.jobs, &jobState{name: name, sched: sched, run: job})
	}
	if s.met, err = newMetrics(deps.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// Run competes for leadership until ctx ends; while it leads it runs the
// jobs. It returns nil once ctx is done and the jobs it was running have
// finished (or were cancelled after DrainTimeout); the lock's connection is
// closed, releasing leadership at once.
func (s *Scheduler) Run(ctx context.Context) error {
	var schedules []string
	for _, j := range s.jobs {
		schedules = append(schedules, j.name+"="+j.sched.String())
	}
	s.log.Info("scheduler started", "runner", s.cfg.Runner, "jobs", schedules, "time_zone", s.loc.String())
	if last, err := s.runs.lastSuccesses(ctx); err == nil {
		s.setLastSuccesses(last)
	}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	for {
		if conn == nil || conn.IsClosed() {
			c, err := s.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.log.Warn("cannot connect for the leader lock; retrying", "err", err, "retry_in", s.check)
			}
			conn = c
		}
		if conn != nil {
			got, err := tryLock(ctx, conn, s.check)
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Warn("trying the leader lock failed; reconnecting", "err", err)
				closeConn(conn)
				conn = nil
			case got:
				s.lead(ctx, conn)
				closeConn(conn) // releases the lock if it was still held
				conn = nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.check):
		}
	}
}

// connect opens the lock's own connection (not from the pool: a session-
// level advisory lock lives exactly as long as its session). Server-side TCP
// keepalives make the server notice a leader host that vanished (no FIN)
// within seconds and release its lock.
func (s *Scheduler) connect(ctx context.Context) (*pgx.Conn, error) {
	cc := s.pool.Config().ConnConfig.Copy()
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["application_name"] = "stackvps-scheduler-lock"
	cc.RuntimeParams["tcp_keepalives_idle"] = "5"
	cc.RuntimeParams["tcp_keepalives_interval"] = "2"
	cc.RuntimeParams["tcp_keepalives_count"] = "3"
	cctx, cancel := context.WithTimeout(ctx, max(s.check, 5*time.Second))
	defer cancel()
	c, err := pgx.ConnectConfig(cctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connecting for the leader lock: %w", err)
	}
	return c, nil
}

// Why a running job was cancelled, in its run's error.
var (
	errLostLeadership = errors.New("this replica lost the leadership")
	errDrainTimeout   = errors.New("the scheduler stopped and the drain timeout passed")
	errTakenOver      = errors.New("another runner took the period over")
	errStopped        = errors.New("the scheduler stopped")
)

// lockKey is per schema, so tests in their own schemas each have a leader.
const lockKey = `hashtext('stackvps.scheduler.' || current_schema())`

func tryLock(ctx context.Context, conn *pgx.Conn, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`).Scan(&got); err != nil {
		return false, fmt.Errorf("trying the leader lock: %w", err)
	}
	return got, nil
}

// stillLeader checks that the session is alive and holds the lock.
func stillLeader(ctx context.Context, conn *pgx.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var held bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)`).Scan(&held)
	if err != nil {
		return fmt.Errorf("checking the leader session: %w", err)
	}
	if !held {
		return errors.New("the leader lock is no longer held")
	}
	return nil
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// lead runs the jobs until ctx ends or leadership is lost.
func (s *Scheduler) lead(ctx context.Context, conn *pgx.Conn) {
	s.met.leader.Set(1)
	s.met.changes.Inc()
	defer s.met.leader.Set(0)
	log := s.log.With("runner", s.cfg.Runner)
	log.Info("became the scheduler leader")
	if last, err := s.runs.lastSuccesses(ctx); err == nil {
		s.setLastSuccesses(last)
	}
	// Jobs run under jobsCtx: cancelled at once when leadership is lost
	// (another replica may take their periods over), after DrainTimeout
	// when the process stops.
	jobsCtx, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(errStopped)
	var wg sync.WaitGroup
	nextCheck := time.Now().Add(s.check)
	reason := "stopping"
	for ctx.Err() == nil {
		now := s.now()
		for _, j := range s.jobs {
			s.consider(ctx, jobsCtx, &wg, j, now)
		}
		s.met.passes.Inc()
		if time.Now().After(nextCheck) {
			if err := stillLeader(ctx, conn, s.check); err != nil {
				if ctx.Err() != nil {
					break
				}
				reason = err.Error()
				log.Error("lost the scheduler leadership; stepping down", "err", err)
				cancelJobs(errLostLeadership)
				break
			}
			nextCheck = time.Now().Add(s.check)
			s.sweep(ctx, now)
		}
		sleep := min(s.cfg.Tick, time.Until(nextCheck))
		for _, j := range s.jobs {
			if n := j.sched.Next(now, s.loc); !n.IsZero() {
				sleep = min(sleep, n.Sub(now))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(max(sleep, time.Millisecond)):
		}
	}
	if ctx.Err() != nil {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(s.cfg.DrainTimeout):
			log.Warn("jobs still running after the drain timeout; cancelling them", "drain_timeout", s.cfg.DrainTimeout)
			cancelJobs(errDrainTimeout)
		}
	}
	wg.Wait()
	log.Info("no longer the scheduler leader", "reason", reason)
}

// consider claims and starts the job's latest period when it is due.
func (s *Scheduler) consider(ctx, jobsCtx context.Context, wg *sync.WaitGroup, j *jobState, now time.Time) {
	p := j.sched.Prev(now, s.loc)
	j.mu.Lock()
	busy := j.running || p.IsZero() || p.Equal(j.handled) || time.Now().Before(j.recheck)
	j.mu.Unlock()
	if busy {
		return
	}
	log := s.log.With("job", j.name, "scheduled_for", p.UTC().Format(time.RFC3339))
	c, err := s.runs.claim(ctx, claimParams{
		job: j.name, scheduledFor: p, runner: s.cfg.Runner, staleAfter: s.cfg.Scheduler.HeartbeatTimeout.Std(),
		maxAttempts: s.cfg.Scheduler.MaxAttempts, retryAfter: s.cfg.Scheduler.RetryAfter.Std(),
	})
	if err != nil {
		if ctx.Err() == nil {
			log.Error("claiming a period failed; retrying", "err", err)
		}
		j.mu.Lock()
		j.recheck = time.Now().Add(s.check)
		j.mu.Unlock()
		return
	}
	switch c.kind {
	case settled:
		j.mu.Lock()
		j.handled = p
		j.mu.Unlock()
		return
	case waiting:
		j.mu.Lock()
		j.recheck = time.Now().Add(s.check)
		j.mu.Unlock()
		return
	}
	if c.new && !c.lastScheduled.IsZero() {
		if n := s.missed(j, c.lastScheduled, p); n > 0 {
			s.met.skipped.WithLabelValues(j.name).Add(float64(n))
			log.Warn("periods missed while no replica led were skipped; running the latest only",
				"skipped", n, "last_recorded", c.lastScheduled.UTC().Format(time.RFC3339))
		}
	}
	if c.prevStatus == "running" {
		s.met.runs.WithLabelValues(j.name, statusAbandoned).Inc()
		log.Warn("taking over a period whose runner stopped heartbeating", "dead_runner", c.prevRunner, "attempt", c.attempt)
	} else if c.prevStatus != "" {
		log.Info("retrying a failed period", "attempt", c.attempt)
	}
	j.mu.Lock()
	j.running = true
	j.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		ok := s.execute(jobsCtx, j, p, c, log)
		j.mu.Lock()
		j.running = false
		if ok {
			j.handled = p
		}
		j.recheck = time.Now().Add(s.check)
		j.mu.Unlock()
	}()
}

// sweep closes past periods left running by dead runners.
func (s *Scheduler) sweep(ctx context.Context, now time.Time) {
	for _, j := range s.jobs {
		p := j.sched.Prev(now, s.loc)
		if p.IsZero() {
			continue
		}
		n, err := s.runs.abandonStale(ctx, j.name, p, s.cfg.Scheduler.HeartbeatTimeout.Std())
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("closing abandoned runs failed", "job", j.name, "err", err)
		case n > 0:
			s.met.runs.WithLabelValues(j.name, statusAbandoned).Add(float64(n))
			s.log.Warn("closed past periods whose runner died; they are not run again", "job", j.name, "count", n)
		}
	}
}

// missed counts the occurrences strictly between last and p (capped).
func (s *Scheduler) missed(j *jobState, last, p time.Time) int {
	n := 0
	for t := j.sched.Next(last, s.loc); !t.IsZero() && t.Before(p) && n < 100000; t = j.sched.Next(t, s.loc) {
		n++
	}
	return n
}

// execute runs one attempt with a heartbeat and records its outcome; it
// reports whether the period succeeded.
func (s *Scheduler) execute(ctx context.Context, j *jobState, p time.Time, c claim, log *slog.Logger) bool {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	info := RunInfo{Job: j.name, ScheduledFor: p, Attempt: c.attempt, Runner: s.cfg.Runner, Previous: c.previous}
	runCtx = WithRunInfo(runCtx, info)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(s.check)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				mine, err := s.runs.heartbeat(runCtx, c.id, c.attempt)
				if err != nil && runCtx.Err() == nil {
					log.Warn("heartbeat failed", "err", err)
				}
				if !mine {
					log.Error("the period was taken over by another runner; cancelling this attempt")
					cancel(errTakenOver)
					return
				}
			}
		}
	}()
	log.Info("job started", "attempt", c.attempt)
	start := time.Now()
	err := safeRun(runCtx, j.run, p)
	dur := time.Since(start)
	if err != nil && runCtx.Err() != nil {
		err = fmt.Errorf("interrupted, %w: %w", context.Cause(runCtx), err)
	}
	cancel(nil)
	<-hbDone
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer fcancel()
	recorded, ferr := s.runs.finish(fctx, c.id, c.attempt, err, Details(runCtx))
	status := statusSucceeded
	if err != nil {
		status = statusFailed
	}
	s.met.runs.WithLabelValues(j.name, status).Inc()
	s.met.duration.WithLabelValues(j.name).Observe(dur.Seconds())
	switch {
	case ferr != nil:
		log.Error("job finished but its outcome could not be recorded; the period will be run again", "status", status,
			"job_err", err, "err", ferr, "duration_ms", dur.Milliseconds())
		return false
	case !recorded:
		log.Warn("job finished after another runner took the period over; outcome not recorded", "status", status, "job_err", err)
		return false
	case err != nil:
		log.Error("job failed", "attempt", c.attempt, "err", err, "duration_ms", dur.Milliseconds())
		return false
	}
	s.met.lastSuccess.WithLabelValues(j.name).Set(float64(time.Now().UnixMilli()) / 1000)
	log.Info("job succeeded", "attempt", c.attempt, "duration_ms", dur.Milliseconds())
	return true
}

func safeRun(ctx context.Context, job Job, p time.Time) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("job panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return job(ctx, p)
}

func (s *Scheduler) setLastSuccesses(last map[string]time.Time) {
	for job, at := range last {
		s.met.lastSuccess.WithLabelValues(job).Set(float64(at.UnixMilli()) / 1000)
	}
}

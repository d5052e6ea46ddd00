package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// runs is the scheduler_runs table.
type runs struct {
	pool *pgxpool.Pool
}

// claimKind says what claim found.
type claimKind int

const (
	// claimed: this runner owns the period's attempt now (new or taken over).
	claimed claimKind = iota
	// settled: the period needs nothing more (succeeded, or failed with
	// every attempt used).
	settled
	// waiting: another runner is on it, or a retry is not due yet.
	waiting
)

type claim struct {
	kind     claimKind
	id       int64
	attempt  int
	new      bool
	previous *PreviousRun
	// took over from (takeover only): the earlier attempt's status and
	// runner.
	prevStatus, prevRunner string
	lastScheduled          time.Time // new only: the job's latest earlier period, if any
}

const insertRun = `INSERT INTO scheduler_runs (job, scheduled_for, status, runner)
VALUES ($1, $2, 'running', $3)
ON CONFLICT (job, scheduled_for) DO NOTHING
RETURNING id, attempt`

// takeOverRun moves a period to a new attempt when its runner stopped
// heartbeating or its failed attempt is due for a retry, appending the
// earlier attempt to failures. The conditions are checked on the locked row,
// so two leaders cannot both take it.
const takeOverRun = `WITH old AS (
	SELECT id, attempt, runner, status, started_at, finished_at, heartbeat_at, error
	FROM scheduler_runs WHERE job = $1 AND scheduled_for = $2 FOR UPDATE
)
UPDATE scheduler_runs r SET
	failures = r.failures || jsonb_build_array(jsonb_build_object(
		'attempt', old.attempt, 'runner', old.runner, 'started_at', old.started_at,
		'finished_at', coalesce(old.finished_at, now()),
		'status', CASE WHEN old.status = 'running' THEN 'abandoned' ELSE old.status END,
		'error', CASE WHEN old.status = 'running'
			THEN format('runner %s stopped heartbeating (last at %s)', old.runner, old.heartbeat_at)
			ELSE old.error END)),
	attempt = old.attempt + 1, status = 'running', runner = $3, started_at = now(), heartbeat_at = now(),
	finished_at = NULL, duration = NULL, error = NULL, details = NULL
FROM old
WHERE r.id = old.id AND (
	(old.status = 'running' AND old.heartbeat_at < now() - make_interval(secs => $4))
	OR (old.status = 'failed' AND old.attempt < $5 AND old.finished_at < now() - make_interval(secs => $6)))
RETURNING r.id, r.attempt, old.status, old.runner`

type claimParams struct {
	job          string
	scheduledFor time.Time
	runner       string
	staleAfter   time.Duration
	maxAttempts  int
	retryAfter   time.Duration
}

// claim tries to own the period (job, scheduledFor).
func (r *runs) claim(ctx context.Context, p claimParams) (claim, error) {
	var c claim
	err := r.pool.QueryRow(ctx, insertRun, p.job, p.scheduledFor, p.runner).Scan(&c.id, &c.attempt)
	switch {
	case err == nil:
		c.kind, c.new = claimed, true
		if err := r.pool.QueryRow(ctx, `SELECT coalesce(max(scheduled_for), 'epoch') FROM scheduler_runs WHERE job = $1 AND scheduled_for < $2`,
			p.job, p.scheduledFor).Scan(&c.lastScheduled); err != nil {
			return c, fmt.Errorf("reading the previous period of %s: %w", p.job, err)
		}
		if c.lastScheduled.Unix() == 0 {
			c.lastScheduled = time.Time{}
		}
	case errors.Is(err, pgx.ErrNoRows):
		err = r.pool.QueryRow(ctx, takeOverRun, p.job, p.scheduledFor, p.runner,
			p.staleAfter.Seconds(), p.maxAttempts, p.retryAfter.Seconds()).Scan(&c.id, &c.attempt, &c.prevStatus, &c.prevRunner)
		if errors.Is(err, pgx.ErrNoRows) {
			var status string
			var attempt int
			if err := r.pool.QueryRow(ctx, `SELECT status, attempt FROM scheduler_runs WHERE job = $1 AND scheduled_for = $2`,
				p.job, p.scheduledFor).Scan(&status, &attempt); err != nil {
				return c, fmt.Errorf("reading the run of %s at %s: %w", p.job, p.scheduledFor.UTC().Format(time.RFC3339), err)
			}
			if status == statusSucceeded || (status == statusFailed && attempt >= p.maxAttempts) {
				c.kind = settled
			} else {
				c.kind = waiting
			}
			return c, nil
		}
		if err != nil {
			return c, fmt.Errorf("taking over the run of %s at %s: %w", p.job, p.scheduledFor.UTC().Format(time.RFC3339), err)
		}
		c.kind = claimed
	default:
		return c, fmt.Errorf("claiming the run of %s at %s: %w", p.job, p.scheduledFor.UTC().Format(time.RFC3339), err)
	}
	var prev PreviousRun
	err = r.pool.QueryRow(ctx, `SELECT scheduled_for, details FROM scheduler_runs
		WHERE job = $1 AND scheduled_for < $2 AND details IS NOT NULL ORDER BY scheduled_for DESC LIMIT 1`,
		p.job, p.scheduledFor).Scan(&prev.ScheduledFor, &prev.Details)
	switch {
	case err == nil:
		c.previous = &prev
	case !errors.Is(err, pgx.ErrNoRows):
		return c, fmt.Errorf("reading the previous details of %s: %w", p.job, err)
	}
	return c, nil
}

// heartbeat refreshes the attempt's heartbeat; false means the attempt is
// no longer this runner's (another leader took it over).
func (r *runs) heartbeat(ctx context.Context, id int64, attempt int) (bool, error) {
	tag, err := r.pool.Exec(ctx, `UPDATE scheduler_runs SET heartbeat_at = now() WHERE id = $1 AND attempt = $2 AND status = 'running'`, id, attempt)
	if err != nil {
		return true, fmt.Errorf("heartbeat: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// finish records the attempt's outcome; false means the attempt was taken
// over meanwhile and nothing was written.
func (r *runs) finish(ctx context.Context, id int64, attempt int, runErr error, details any) (bool, error) {
	status, errText := statusSucceeded, (*string)(nil)
	if runErr != nil {
		status = statusFailed
		s := runErr.Error()
		errText = &s
	}
	var raw []byte
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return false, fmt.Errorf("encoding run details: %w", err)
		}
		raw = b
	}
	tag, err := r.pool.Exec(ctx, `UPDATE scheduler_runs
		SET status = $3, finished_at = now(), duration = now() - started_at, error = $4, details = $5
		WHERE id = $1 AND attempt = $2 AND status = 'running'`, id, attempt, status, errText, raw)
	if err != nil {
		return false, fmt.Errorf("recording the run's outcome: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// lastSuccesses returns when each job last succeeded.
func (r *runs) lastSuccesses(ctx context.Context) (map[string]time.Time, error) {
	rows, err := r.pool.Query(ctx, `SELECT job, max(finished_at) FROM scheduler_runs WHERE status = 'succeeded' GROUP BY job`)
	if err != nil {
		return nil, fmt.Errorf("reading the last successes: %w", err)
	}
	out := map[string]time.Time{}
	var job string
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&job, &at}, func() error { out[job] = at; return nil })
	if err != nil {
		return nil, fmt.Errorf("reading the last successes: %w", err)
	}
	return out, nil
}

// abandonStale closes the running attempts of job's periods before latest
// whose runner stopped heartbeating: a period that is no longer the job's
// latest is not run again, but its row must not claim to be running. It
// returns how many it closed.
func (r *runs) abandonStale(ctx context.Context, job string, latest time.Time, staleAfter time.Duration) (int64, error) {
	tag, err := r.pool.Exec(ctx, `UPDATE scheduler_runs SET
		status = 'failed', finished_at = now(), duration = now() - started_at,
		error = format('abandoned: runner %s stopped heartbeating (last at %s); the period is past and is not run again', runner, heartbeat_at),
		failures = failures || jsonb_build_array(jsonb_build_object(
			'attempt', attempt, 'runner', runner, 'started_at', started_at, 'finished_at', now(),
			'status', 'abandoned', 'error', format('runner %s stopped heartbeating (last at %s)', runner, heartbeat_at)))
		WHERE job = $1 AND scheduled_for < $2 AND status = 'running' AND heartbeat_at < now() - make_interval(secs => $3)`,
		job, latest, staleAfter.Seconds())
	if err != nil {
		return 0, fmt.Errorf("closing abandoned runs of %s: %w", job, err)
	}
	return tag.RowsAffected(), nil
}

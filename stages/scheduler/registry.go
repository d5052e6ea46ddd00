package scheduler

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"
)

// A Job is one scheduled task. scheduledFor is the period's instant from the
// job's schedule (the same on every replica), not the time it runs: a job
// reports on what that instant implies (the daily report of 07:00 covers
// the previous local day) so a late or repeated run produces the same
// result. A Job must be safe to run again for the same period (a retry, or
// a takeover after its runner died): anything it writes is idempotent or
// keyed by scheduledFor. It must return when ctx ends. A returned error
// fails the attempt; it is retried up to scheduler.max_attempts.
type Job func(ctx context.Context, scheduledFor time.Time) error

// Registry holds the jobs a scheduler can run, by name. It is built in main
// and handed to New; it is not safe for concurrent Register calls.
type Registry struct {
	jobs map[string]Job
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{jobs: map[string]Job{}} }

// ErrDuplicateJob is returned by Register for a name already registered.
var ErrDuplicateJob = errors.New("job registered twice")

var jobName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Register adds job under name (lowercase letters, digits and '_', as in
// scheduler.jobs and scheduler_runs.job).
func (r *Registry) Register(name string, job Job) error {
	if !jobName.MatchString(name) {
		return fmt.Errorf("job name %q: want lowercase letters, digits and _", name)
	}
	if job == nil {
		return fmt.Errorf("job %s: nil", name)
	}
	if _, dup := r.jobs[name]; dup {
		return fmt.Errorf("%w: %s", ErrDuplicateJob, name)
	}
	r.jobs[name] = job
	return nil
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.jobs))
	for n := range r.jobs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (r *Registry) get(name string) (Job, bool) {
	j, ok := r.jobs[name]
	return j, ok
}

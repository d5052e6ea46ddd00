package scheduler

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// RunInfo describes the run a job is executing; FromContext returns it.
type RunInfo struct {
	// Job is the job's name.
	Job string
	// ScheduledFor is the period's instant.
	ScheduledFor time.Time
	// Attempt counts the attempts of this period, from 1.
	Attempt int
	// Runner is host/pid of this process.
	Runner string
	// Previous is the latest earlier period of the job that recorded
	// details (SetDetails), or nil.
	Previous *PreviousRun

	details *detailsBox
}

// PreviousRun is what a job recorded in an earlier period.
type PreviousRun struct {
	ScheduledFor time.Time
	Details      json.RawMessage
}

type detailsBox struct {
	mu sync.Mutex
	v  any
}

type runInfoKey struct{}

// WithRunInfo returns ctx carrying info, as the scheduler passes it to a
// job; tests of a job use it to give the job a previous run.
func WithRunInfo(ctx context.Context, info RunInfo) context.Context {
	if info.details == nil {
		info.details = &detailsBox{}
	}
	return context.WithValue(ctx, runInfoKey{}, info)
}

// FromContext returns the run ctx belongs to, if a scheduler started it.
func FromContext(ctx context.Context) (RunInfo, bool) {
	info, ok := ctx.Value(runInfoKey{}).(RunInfo)
	return info, ok
}

// SetDetails records v (marshalled to JSON) as the details of the current
// run, stored in scheduler_runs.details when the run ends, whether it
// succeeds or fails, and handed to the job's next periods as
// RunInfo.Previous. It does nothing outside a run.
func SetDetails(ctx context.Context, v any) {
	if info, ok := FromContext(ctx); ok && info.details != nil {
		info.details.mu.Lock()
		info.details.v = v
		info.details.mu.Unlock()
	}
}

// Details returns what the run of ctx recorded with SetDetails.
func Details(ctx context.Context) any {
	if info, ok := FromContext(ctx); ok && info.details != nil {
		info.details.mu.Lock()
		defer info.details.mu.Unlock()
		return info.details.v
	}
	return nil
}

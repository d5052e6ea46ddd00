package pipeline

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Check reports whether one dependency is usable; nil means ready.
type Check func(ctx context.Context) error

// Health holds the readiness checks of every component in the process. It is
// safe for concurrent use.
type Health struct {
	mu      sync.Mutex
	checks  map[string]Check
	timeout time.Duration
}

// NewHealth returns an empty Health whose checks each get timeout.
func NewHealth(timeout time.Duration) *Health {
	return &Health{checks: map[string]Check{}, timeout: timeout}
}

// Add registers a named check, replacing one of the same name.
func (h *Health) Add(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// CheckResult is one check's outcome.
type CheckResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Run runs every check concurrently, each bounded by the timeout, and
// returns the results sorted by name and whether all passed.
func (h *Health) Run(ctx context.Context) ([]CheckResult, bool) {
	h.mu.Lock()
	checks := make(map[string]Check, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	h.mu.Unlock()
	results := make([]CheckResult, 0, len(checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, h.timeout)
			defer cancel()
			err := c(cctx)
			r := CheckResult{Name: name, OK: err == nil}
			if err != nil {
				r.Error = err.Error()
			}
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].Name < results[j].Name })
	all := true
	for _, r := range results {
		all = all && r.OK
	}
	return results, all
}

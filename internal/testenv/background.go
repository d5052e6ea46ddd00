package testenv

import (
	"context"
	"sync"
	"testing"
)

// RunInBackground runs run (a stage's Run) in a goroutine until stop is
// called or the test ends. stop cancels run's context and returns what run
// returned; calling it again returns the same.
func RunInBackground(tb testing.TB, run func(context.Context) error) (stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	tb.Cleanup(func() { _ = stop() })
	return stop
}

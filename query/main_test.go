package query_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine they started is still
// running after them: a stage, client or pool left unstopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

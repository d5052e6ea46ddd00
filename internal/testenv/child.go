package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// A test that kills a stage with SIGKILL runs the stage in a child process:
// a copy of the test binary that runs the stage instead of the tests.
// TestMain calls RunChild first; the test starts the child with StartChild
// and kills it with Kill9.

// childEnv is the environment variable that carries the spec of the child
// called name: STACKVPS_<NAME>_TEST_CHILD.
func childEnv(name string) string {
	return "STACKVPS_" + strings.ToUpper(name) + "_TEST_CHILD"
}

// RunChild makes the test binary the child called name when StartChild
// started it as one: it decodes the spec StartChild was given (JSON) and
// runs main with it instead of the tests, then exits, with status 0 when
// main returns nil and 1, the error on stderr, otherwise. In any other
// process it returns at once. Call it first in TestMain.
func RunChild[T any](name string, main func(spec T) error) {
	raw := os.Getenv(childEnv(name))
	if raw == "" {
		return
	}
	var spec T
	err := json.Unmarshal([]byte(raw), &spec)
	if err != nil {
		err = fmt.Errorf("parsing %s: %w", childEnv(name), err)
	} else {
		err = main(spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+" child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// StartChild starts the test binary as the child called name (see
// RunChild) with spec, which must encode as JSON. The child's stderr goes
// to t.Log, prefixed "<name> child: ". A child still running when the test
// ends is killed and waited for.
func StartChild(t testing.TB, name string, spec any) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(spec)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv(name)+"="+string(raw))
	cmd.Stderr = childLog{t: t, prefix: name + " child: "}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// Kill9 kills the child with SIGKILL, so that it neither drains, flushes
// nor commits, and waits for it. The test fails unless the child ended by
// the signal (or an exit status).
func Kill9(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	err := cmd.Wait()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "the child was killed: %v", err)
}

// childLog writes a child's output to the test log.
type childLog struct {
	t      testing.TB
	prefix string
}

func (w childLog) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

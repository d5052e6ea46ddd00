package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// binDir holds the stackvps binary the process tests run; TestMain creates
// and removes it.
var binDir string

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stackvps-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating the binary directory:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// binary returns the path of the stackvps binary, built from this package
// once per test binary, on first use, so that tests that only call run(...)
// in-process do not pay for the build.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		path := filepath.Join(binDir, "stackvps")
		out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		binPath = path
	})
	require.NoError(t, buildErr)
	return binPath
}

// proc is a stackvps process started by a test.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *testenv.SyncBuffer
	done           chan struct{} // closed when the process has exited
}

// startProc starts the binary with exactly env as its environment (nothing
// is inherited, so the developer's variables cannot change the outcome) in
// an empty working directory (so no ./stackvps.yaml is picked up). The
// process is killed at cleanup if it is still running.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{stdout: &testenv.SyncBuffer{}, stderr: &testenv.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Env = env
	if p.cmd.Env == nil {
		p.cmd.Env = []string{}
	}
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("stackvps %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout, p.stderr)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test (after killing the process) if it does not exit.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		t.Fatalf("stackvps did not exit within %s; killed it\nstderr:\n%s", timeout, p.stderr)
		return -1
	}
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// runProc runs the binary to completion (at most timeout) and returns its
// exit code, stdout and stderr.
func runProc(t *testing.T, timeout time.Duration, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := startProc(t, env, args...)
	code = p.wait(t, timeout)
	return code, p.stdout.String(), p.stderr.String()
}

// runInProcess calls run(...) with exactly environ and returns the exit
// code, stdout and stderr.
func runInProcess(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, environ, &out, &errOut)
	return code, out.String(), errOut.String()
}

// freePort returns a loopback port nothing listens on right now: the test
// either hands it to a process or uses it as a dead dependency.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// deadAddr returns host:port of a loopback port with nothing listening.
func deadAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// dbEnv points a process at the database section's URL.
func dbEnv(d config.Database) []string {
	return []string{"DATABASE_URL=" + d.URL.Reveal()}
}

// kafkaEnv points a process at the kafka section: brokers, client id,
// partitions and every contract topic.
func kafkaEnv(k config.Kafka) []string {
	return append(testenv.KafkaEnv(k),
		"STACKVPS_KAFKA_PARTITIONS="+strconv.Itoa(k.Partitions),
		"STACKVPS_KAFKA_DIAL_TIMEOUT="+k.DialTimeout.String())
}

// mqttEnv points a process at the mqtt section's broker.
func mqttEnv(m config.MQTT) []string {
	return []string{"STACKVPS_MQTT_BROKER=" + m.Broker}
}

// concat joins environment lists; a later entry for the same variable wins,
// for config.Load and os/exec alike.
func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// httpGet fetches url and returns the status code and body.
func httpGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// migratedPool connects to d, applies the migrations and closes the pool
// at cleanup.
func migratedPool(t *testing.T, d config.Database) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), d.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = timescale.Migrate(t.Context(), pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	return pool
}

package submit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/regulator"
	"github.com/stackvps/stackvps/stages/submit"
)

// runChild is the submitter process of the kill test: it submits for the
// schema of the database URL dbURL until it is killed.
func runChild(dbURL string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer pool.Close()
	sealer, err := compliance.NewSealer(testKey())
	if err != nil {
		return fmt.Errorf("sealer: %w", err)
	}
	s, err := submit.New(submitConfig(), submit.Deps{Store: store.New(pool, sealer),
		Protocols: compliance.NewProtocols(&http.Client{}), Registerer: prometheus.NewRegistry(), Log: testLogger()})
	if err != nil {
		return fmt.Errorf("building the submitter: %w", err)
	}
	if err := s.Run(ctx); err != nil {
		return fmt.Errorf("submitter: %w", err)
	}
	return nil
}

// TestKillIntegration kills submitter processes (SIGKILL) at random
// moments, many times, while the regulator hangs after accepting some
// requests, answers others late and fails others; then lets one run to the
// end. Every slot must end CONFIRMED with the receipt of its one and only
// acceptance, every attempt must have its outcome, and no slot may have
// been accepted twice.
func TestKillIntegration(t *testing.T) {
	if testing.Short() {
		t.Skip("kill test: not in -short")
	}
	e := newEnv(t, regulator.Config{Seed: 7, Faults: []regulator.Fault{
		{Kind: regulator.FaultHang, Probability: 0.2},
		{Kind: regulator.FaultSlow, Probability: 0.3, Delay: 200 * time.Millisecond},
		{Kind: regulator.FaultServerError, Probability: 0.1},
	}})
	e.point("P1")
	e.point("P2")
	c1 := e.dgaConfig("P1", obra)
	c2 := e.dgaConfig("P2", "OB-0602-8")
	slots := hours(30)
	for i, at := range slots {
		e.fill(c1, at, values(i))
		e.fill(c2, at, values(i+100))
	}
	// Slow enough that kills land in the middle of the backlog.
	_, err := e.pool.Exec(e.ctx, `UPDATE compliance_sources SET min_interval = '30 milliseconds'`)
	require.NoError(t, err)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const rounds = 20
	for range rounds {
		cmd := testenv.StartChild(t, childName, e.dbURL)
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
		testenv.Kill9(t, cmd)
	}
	var open int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM compliance_attempts WHERE outcome IS NULL`).Scan(&open))
	t.Logf("after %d kills: %d attempts left open by a kill", rounds, open)

	// Recovery: no faults, one process to the end.
	e.reg.ClearFaults()
	cmd := testenv.StartChild(t, childName, e.dbURL)
	eventually(t, 90*time.Second, "every slot confirmed", func() (bool, string) {
		var notDone int
		var sample string
		require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FILTER (WHERE status <> 'CONFIRMED'),
				coalesce(string_agg(status || '@' || slot_at::text, ', ') FILTER (WHERE status <> 'CONFIRMED'), '')
			FROM compliance_submissions WHERE data IS NOT NULL`).Scan(&notDone, &sample))
		return notDone == 0, sample
	})
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	_ = cmd.Wait()

	accepted := e.reg.Accepted()
	require.Empty(t, e.reg.Violations(), "no slot accepted twice")
	for _, c := range []store.Config{c1, c2} {
		for _, at := range slots {
			key := dgaKey(c.Params.WorkCode, at)
			require.Equal(t, 1, accepted[key], "acceptances of %s", key)
			s := e.state(c.ID, at)
			require.Equal(t, store.StatusConfirmed, s.Status, key)
			require.Zero(t, s.Open, "open attempts of %s", key)
			sl, ok := e.reg.Slot(key)
			require.True(t, ok)
			require.Equal(t, []string{s.Receipt}, sl.Receipts, "receipt of %s", key)
		}
	}
	var total, finished int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*), count(outcome) FROM compliance_attempts`).Scan(&total, &finished))
	require.Equal(t, total, finished, "every attempt has its outcome")
	var kinds []string
	rows, err := e.pool.Query(e.ctx, `SELECT kind || ':' || outcome || '=' || count(*) FROM compliance_attempts GROUP BY kind, outcome ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		kinds = append(kinds, k)
	}
	require.NoError(t, rows.Err())
	t.Logf("attempts: %d (%s); regulator requests: %d", total, strings.Join(kinds, ", "), e.reg.AcceptedReport().Requests)
}

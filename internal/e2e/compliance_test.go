package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/regulator"
	"github.com/stackvps/stackvps/simulate"
)

// complianceRig is a deployment whose dga-subterraneas source points at an
// in-process reference regulator, with one hourly DGA config per point.
type complianceRig struct {
	*deployment
	reg   *regulator.Server
	store *store.Store
	// day is [from, to): the slots the fleet's readings cover.
	from, to time.Time
	obras    map[string]string // point -> codigo obra
}

// newComplianceRig publishes nothing yet: the fleet is devices × one reading
// a minute from start (an hour boundary hours+2 hours ago) for hours and a
// few minutes, so each of the hours slots from start on has its reading at
// the slot instant (the slot at start comes from the record of the hour
// before it, which holds only that reading) and every hour window closes.
func newComplianceRig(t *testing.T, devices int, hours int, extraYAML string, env ...string) *complianceRig {
	t.Helper()
	reg := regulator.New(regulator.Config{Seed: 7})
	srv := httptest.NewServer(reg.Handler())
	t.Cleanup(func() { reg.Close(); srv.Close() })

	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	keyB64 := base64.StdEncoding.EncodeToString(key)
	yaml := fmt.Sprintf(`compliance:
  sources:
    dga-subterraneas:
      endpoint: %s/api/v1/mediciones/subterraneas
      min_interval: 1ms
      request_timeout: 2s
%s`, srv.URL, extraYAML)
	cfgFile := filepath.Join(t.TempDir(), "stackvps.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(yaml), 0o600))

	start := time.Now().UTC().Truncate(time.Hour).Add(-time.Duration(hours+2) * time.Hour)
	env = append([]string{
		"STACKVPS_CONFIG=" + cfgFile,
		"STACKVPS_COMPLIANCE_CREDENTIALS_KEY=" + keyB64,
		"STACKVPS_SUBMIT_POLL_INTERVAL=200ms",
		"STACKVPS_SUBMIT_MAINTAIN_INTERVAL=1s",
		"STACKVPS_SUBMIT_SLOTS_AHEAD=1h",
		"STACKVPS_SUBMIT_BACKOFF_INITIAL=100ms",
		"STACKVPS_SUBMIT_BACKOFF_MAX=1s",
		"STACKVPS_SUBMIT_LOCK_RETRY=500ms",
		// The fleet uploads a day of backlog at once, and 64 publishes in
		// flight reorder a device's readings a little: the hours must stay
		// open to late readings for as long as the backlog is old (see
		// aggregate.allowed_lateness), or the readings reordered behind a
		// closed hour are too_late. The last hour closes on idleness.
		"STACKVPS_AGGREGATE_ALLOWED_LATENESS=" + fmt.Sprint(time.Duration(hours+4)*time.Hour),
		"STACKVPS_AGGREGATE_IDLE_TIMEOUT=5s",
	}, env...)
	d := newDeployment(t, simulate.Config{Devices: devices, Rate: 0, Step: time.Minute, Count: hours*60 + 6, Start: start}, env...)

	sealer, err := compliance.NewSealer(config.Secret(keyB64))
	require.NoError(t, err)
	st := store.New(d.pool, sealer)
	rig := &complianceRig{deployment: d, reg: reg, store: st, from: start, to: start.Add(time.Duration(hours) * time.Hour), obras: map[string]string{}}
	ctx := testenv.Context(t, time.Minute)
	for i, id := range d.fleet.Devices() {
		point := simulate.PointOf(id)
		obra := fmt.Sprintf("OB-0602-%d", 100+i)
		rig.obras[point] = obra
		_, err := st.CreateConfig(ctx, store.SystemActor("test:e2e"), store.NewConfig{
			Point: point, Source: compliance.SourceDGASubterraneas,
			Params: compliance.Params{
				WorkCode: obra, CompanyRUT: "77555666-8", InformantRUT: "20999888-2",
				Standard: "mayor", ValueMode: "instant",
			},
			Credentials: &compliance.Credentials{Username: "20999888-2", Password: "clave-informante"},
			StartDate:   start.Add(-24 * time.Hour),
		})
		require.NoError(t, err, "config of %s", point)
	}
	return rig
}

// slotCounts returns the slots of [from, to) by status.
func (r *complianceRig) slotCounts(ctx context.Context) map[string]int {
	rows, err := r.pool.Query(ctx, `SELECT status, count(*) FROM compliance_submissions
		WHERE slot_at >= $1 AND slot_at < $2 GROUP BY status`, r.from, r.to)
	require.NoError(r.t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		require.NoError(r.t, rows.Scan(&s, &n))
		out[s] = n
	}
	require.NoError(r.t, rows.Err())
	return out
}

// waitConfirmed waits until every slot of [from, to) of every point is
// CONFIRMED.
func (r *complianceRig) waitConfirmed(ctx context.Context, want int, within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	var last map[string]int
	for time.Now().Before(deadline) {
		last = r.slotCounts(ctx)
		if last[store.StatusConfirmed] == want {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.t.Fatalf("slots of the day by status after %s: %v; want %d CONFIRMED", within, last, want)
}

// waitQuiet waits until no slot is in flight: none SENT (outcome unknown)
// none PENDING with data (about to be sent), none ERROR to be retried, so the
// regulator's counts and the database can be compared.
func (r *complianceRig) waitQuiet(ctx context.Context, within time.Duration) {
	r.t.Helper()
	const q = `SELECT count(*) FROM compliance_submissions
		WHERE status = 'SENT' OR (status = 'PENDING' AND data IS NOT NULL) OR (status = 'ERROR' AND next_attempt_at IS NOT NULL)`
	var n int
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		require.NoError(r.t, r.pool.QueryRow(ctx, q).Scan(&n))
		if n == 0 {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	r.t.Fatalf("%d slots still in flight after %s", n, within)
}

// verifyExactlyOnce checks the regulator's side against the database:
// every CONFIRMED slot accepted exactly once with its receipt stored, the
// want slots of [from, to) among them, no acceptance the database does not
// know of, and every request the regulator saw preceded by an attempt row.
func (r *complianceRig) verifyExactlyOnce(ctx context.Context, want int) {
	r.t.Helper()
	rep := r.reg.AcceptedReport()
	require.Empty(r.t, rep.Violations, "slots accepted more than once")
	byKey := map[string]regulator.Slot{}
	for _, s := range rep.Slots {
		byKey[s.Key] = s
	}
	loc := time.FixedZone("UTC-4", -4*3600) // dga-subterraneas renders slots in Etc/GMT+4
	rows, err := r.pool.Query(ctx, `SELECT s.id, s.point, s.slot_at, s.receipt,
			(SELECT count(*) FROM compliance_attempts a WHERE a.submission_id = s.id),
			(SELECT count(*) FROM compliance_attempts a WHERE a.submission_id = s.id AND a.receipt = s.receipt)
		FROM compliance_submissions s WHERE s.status = 'CONFIRMED'`)
	require.NoError(r.t, err)
	defer rows.Close()
	inDay, confirmed := 0, 0
	for rows.Next() {
		var id, attempts, withReceipt int64
		var point, receipt string
		var at time.Time
		require.NoError(r.t, rows.Scan(&id, &point, &at, &receipt, &attempts, &withReceipt))
		confirmed++
		if !at.Before(r.from) && at.Before(r.to) {
			inDay++
		}
		local := at.In(loc)
		k := regulator.DGAKey(r.obras[point], local.Format(time.DateOnly), local.Format(time.TimeOnly))
		s, ok := byKey[k]
		require.True(r.t, ok, "slot %d (%s) is CONFIRMED but never reached the regulator", id, k)
		require.Equal(r.t, 1, s.Accepted, "slot %s accepted %d times", k, s.Accepted)
		require.Equal(r.t, s.Receipts[0], receipt, "slot %s: stored receipt differs from the regulator's", k)
		require.GreaterOrEqual(r.t, attempts, int64(s.Requests),
			"slot %s: the regulator saw %d requests but only %d attempts are on record", k, s.Requests, attempts)
		require.Positive(r.t, withReceipt, "slot %s: no attempt records the receipt", k)
		delete(byKey, k)
	}
	require.NoError(r.t, rows.Err())
	require.Equal(r.t, want, inDay, "CONFIRMED slots in the day")
	for k, s := range byKey {
		require.Zero(r.t, s.Accepted, "the regulator accepted %s, which the database does not hold as CONFIRMED", k)
	}
	r.t.Logf("%d slots CONFIRMED (%d in the day), each accepted once; the regulator saw %d requests", confirmed, inDay, rep.Requests)
}

// A day of hourly slots for 20 points through the real pipeline, MQTT to
// regulator: every slot is confirmed exactly once at the reference regulator
// and its receipt is stored.
func TestComplianceDayEndToEndIntegration(t *testing.T) {
	const devices, hours = 20, 24
	r := newComplianceRig(t, devices, hours, "")
	ctx := testenv.Context(t, 8*time.Minute)
	r.run("bridge,normalize,sink,aggregate,submit")
	r.publish(ctx, 0, hours*60+6)
	r.waitConfirmed(ctx, devices*hours, 5*time.Minute)
	r.waitQuiet(ctx, time.Minute)
	r.verifyExactlyOnce(ctx, devices*hours)

	// Values: the reading at the slot instant, exactly as the fleet sent it
	// (canonical units; DGA's string formatting is checked by the
	// regulator, which refuses anything else).
	index := map[string]int{}
	for i, id := range r.fleet.Devices() {
		index[simulate.PointOf(id)] = i
	}
	rows, err := r.pool.Query(ctx, `SELECT point, slot_at, (data->>'flow')::float8, (data->>'totalizer')::float8, (data->>'level')::float8
		FROM compliance_submissions WHERE slot_at >= $1 AND slot_at < $2`, r.from, r.to)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var point string
		var at time.Time
		var flow, total, level float64
		require.NoError(t, rows.Scan(&point, &at, &flow, &total, &level))
		want := r.fleet.ReadingAt(index[point], int(at.Sub(r.start)/time.Minute), r.start)
		require.True(t, want.Time.Equal(at), "reading %v is not the slot instant %v", want.Time, at)
		require.InDelta(t, want.Flow, flow, 1e-9, "%s %s flow", point, at)
		require.InDelta(t, want.Totalizer, total, 1e-9, "%s %s totalizer", point, at)
		require.InDelta(t, want.Level, level, 1e-9, "%s %s level", point, at)
	}
	require.NoError(t, rows.Err())
}

// Faults on every side: answers lost after the regulator accepted (the
// client times out), 5xx bursts, forced duplicates, and the submit stage
// killed with SIGKILL every few seconds. Still exactly one accepted
// submission per slot, every receipt stored, and an attempt on record for
// every request the regulator saw.
func TestComplianceFaultsEndToEndIntegration(t *testing.T) {
	const devices, hours = 6, 12
	r := newComplianceRig(t, devices, hours, "", "STACKVPS_SUBMIT_UNKNOWN_AFTER=3s")
	require.NoError(t, r.reg.AddFaults(
		regulator.Fault{Kind: regulator.FaultHang, Endpoint: regulator.EndpointDGA, Probability: 0.15, Delay: 5 * time.Second},
		regulator.Fault{Kind: regulator.FaultServerError, Endpoint: regulator.EndpointDGA, Probability: 0.15},
		regulator.Fault{Kind: regulator.FaultDuplicate, Endpoint: regulator.EndpointDGA, Probability: 0.05},
	))
	ctx := testenv.Context(t, 8*time.Minute)
	r.run("bridge,normalize,sink,aggregate")
	submit := r.run("submit")
	r.publish(ctx, 0, hours*60+6)

	want := devices * hours
	deadline := time.Now().Add(4 * time.Minute)
	kills := 0
	for time.Now().Before(deadline) && r.slotCounts(ctx)[store.StatusConfirmed] < want {
		time.Sleep(time.Duration(1500+kills%3*700) * time.Millisecond)
		submit.kill(t)
		kills++
		submit = r.run("submit")
	}
	r.reg.ClearFaults()
	r.waitConfirmed(ctx, want, 2*time.Minute)
	r.waitQuiet(ctx, time.Minute)
	r.verifyExactlyOnce(ctx, want)
	rep := r.reg.AcceptedReport()
	var lines []string
	for _, s := range rep.Slots {
		if s.Requests > 1 {
			lines = append(lines, fmt.Sprintf("%s: %d requests, %d duplicates", s.Key, s.Requests, s.Duplicates))
		}
	}
	t.Logf("%d kills; %d requests for %d acceptances; slots sent more than once (answers lost, 5xx, kills):\n%s",
		kills, rep.Requests, rep.Accepted, strings.Join(lines, "\n"))
	require.Positive(t, kills)
	submit.stop(t)
}

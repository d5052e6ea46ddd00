package submit_test

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/regulator"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/submit"
)

// childName is the submitter process of the kill test (runChild).
const childName = "submit"

func TestMain(m *testing.M) {
	testenv.RunChild(childName, runChild)
	goleak.VerifyTestMain(m)
}

// dga is the zone of the DGA sources.
var dga = time.FixedZone("UTC-4", -4*3600)

const obra = "OB-0602-7"

func testKey() config.Secret {
	return config.Secret(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testLog logs to the test output when -v is given.
func testLog(*testing.T) *slog.Logger {
	if testing.Verbose() {
		return testLogger()
	}
	return discard()
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// submitConfig is a fast submitter for tests.
func submitConfig() config.Submit {
	c := config.Default().Submit
	c.PollInterval = config.Duration(50 * time.Millisecond)
	c.LockRetry = config.Duration(100 * time.Millisecond)
	c.UnknownAfter = config.Duration(500 * time.Millisecond)
	c.BackoffInitial = config.Duration(50 * time.Millisecond)
	c.BackoffMax = config.Duration(200 * time.Millisecond)
	c.SlotsAhead = config.Duration(time.Hour)
	c.MaintainInterval = config.Duration(time.Hour)
	return c
}

// sourcesConfig points the built-in sources at the regulator with short
// timeouts and retries.
func sourcesConfig(base string) config.Compliance {
	c := config.Default().Compliance
	fast := func(endpoint string) config.SourceConfig {
		return config.SourceConfig{Endpoint: endpoint, MinInterval: config.Duration(time.Millisecond),
			RequestTimeout: config.Duration(300 * time.Millisecond), RetryRejectedAfter: config.Duration(300 * time.Millisecond),
			MaxAttempts: 3}
	}
	c.Sources = map[string]config.SourceConfig{
		compliance.SourceDGASubterraneas: fast(base + "/api/v1/mediciones/subterraneas"),
		compliance.SourceDGAFlujometro:   fast(base + "/api/v1/mediciones/superficiales/flujometro"),
		compliance.SourceSMA:             fast(base + "/api/v1"),
	}
	return c
}

// env is a migrated schema, a reference regulator and a store whose
// sources point at it.
type env struct {
	t     *testing.T
	ctx   context.Context
	dbURL string
	pool  *pgxpool.Pool
	store *store.Store
	reg   *regulator.Server
	url   string
}

func newEnv(t *testing.T, rc regulator.Config) *env {
	t.Helper()
	db := testenv.Database(t)
	ctx := testenv.Context(t, 3*time.Minute)
	pool, err := pgxpool.New(ctx, db.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = timescale.Migrate(ctx, pool, discard())
	require.NoError(t, err)
	reg := regulator.New(rc)
	srv := httptest.NewServer(reg.Handler())
	t.Cleanup(func() { reg.Close(); srv.Close() })
	sealer, err := compliance.NewSealer(testKey())
	require.NoError(t, err)
	st := store.New(pool, sealer)
	srcs, err := compliance.Sources(sourcesConfig(srv.URL))
	require.NoError(t, err)
	require.NoError(t, st.SyncSources(ctx, srcs))
	return &env{t: t, ctx: ctx, dbURL: db.URL.Reveal(), pool: pool, store: st, reg: reg, url: srv.URL}
}

func (e *env) point(code string) {
	e.t.Helper()
	_, err := e.pool.Exec(e.ctx, `INSERT INTO catchment_points (code, name) VALUES ($1, $1)`, code)
	require.NoError(e.t, err)
}

func rut(n string) string { return n + "-" + compliance.RUTCheckDigit(n) }

// dgaConfig binds point to dga-subterraneas, hourly, from two days ago.
func (e *env) dgaConfig(point, workCode string) store.Config {
	e.t.Helper()
	c, err := e.store.CreateConfig(e.ctx, store.SystemActor("test"), store.NewConfig{
		Point: point, Source: compliance.SourceDGASubterraneas,
		Params: compliance.Params{WorkCode: workCode, CompanyRUT: rut("77555666"), InformantRUT: rut("20999888"),
			Frequency: compliance.Hourly},
		Credentials: &compliance.Credentials{Username: rut("20999888"), Password: "clave"},
		StartDate:   time.Now().Add(-48 * time.Hour),
	})
	require.NoError(e.t, err)
	return c
}

func (e *env) smaConfig(point string) store.Config {
	e.t.Helper()
	c, err := e.store.CreateConfig(e.ctx, store.SystemActor("test"), store.NewConfig{
		Point: point, Source: compliance.SourceSMA,
		Params:      compliance.Params{UF: "123", Process: "4", Device: "12180", Frequency: compliance.Hourly},
		Credentials: &compliance.Credentials{Username: rut("20999888"), Password: "clave"},
		StartDate:   time.Now().Add(-48 * time.Hour),
	})
	require.NoError(e.t, err)
	return c
}

func f64(v float64) *float64 { return &v }

// hours returns n past hourly slots, oldest first, ending two hours ago.
func hours(n int) []time.Time {
	last := time.Now().Truncate(time.Hour).Add(-2 * time.Hour)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = last.Add(-time.Duration(n-1-i) * time.Hour).UTC()
	}
	return out
}

// dgaKey is the regulator's key of a DGA slot.
func dgaKey(work string, at time.Time) string {
	l := at.In(dga)
	return regulator.DGAKey(work, l.Format(time.DateOnly), l.Format(time.TimeOnly))
}

func (e *env) fill(c store.Config, at time.Time, v compliance.Values) {
	e.t.Helper()
	_, err := e.store.FillSlot(e.ctx, c.ID, at, v, 1)
	require.NoError(e.t, err)
}

func values(i int) compliance.Values {
	return compliance.Values{Flow: f64(10 + float64(i)), Totalizer: f64(1000 + 10*float64(i)), Level: f64(5.5)}
}

// newSubmit builds a submitter on e.
func (e *env) newSubmit(cfg config.Submit) *submit.Submit {
	e.t.Helper()
	s, err := submit.New(cfg, submit.Deps{Store: e.store, Protocols: compliance.NewProtocols(&http.Client{}),
		Registerer: prometheus.NewRegistry(), Log: testLog(e.t)})
	require.NoError(e.t, err)
	return s
}

// run runs s until the test ends; stop stops it and waits.
func run(t *testing.T, r interface{ Run(context.Context) error }) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)
	return stop
}

// slotState is a slot's row as the tests check it.
type slotState struct {
	Status, Receipt, Reason string
	Attempts                int
	Next                    *time.Time
	Open                    int // attempts without an outcome
}

func (e *env) state(configID int64, at time.Time) slotState {
	e.t.Helper()
	var s slotState
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT status, coalesce(receipt, ''), coalesce(reason, ''), attempts,
			next_attempt_at, (SELECT count(*) FROM compliance_attempts a WHERE a.submission_id = s.id AND a.outcome IS NULL)
		FROM compliance_submissions s WHERE config_id = $1 AND slot_at = $2`, configID, at).
		Scan(&s.Status, &s.Receipt, &s.Reason, &s.Attempts, &s.Next, &s.Open))
	return s
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not reached after %s: %s", what, d, last)
}

// outcomes returns the outcomes of the slot's attempts in order.
func (e *env) outcomes(configID int64, at time.Time) []string {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `SELECT a.kind || ':' || coalesce(a.outcome, 'open') FROM compliance_attempts a
		JOIN compliance_submissions s ON s.id = a.submission_id WHERE s.config_id = $1 AND s.slot_at = $2 ORDER BY a.attempt`,
		configID, at)
	require.NoError(e.t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(e.t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(e.t, rows.Err())
	return out
}

var storeActor = store.SystemActor("test")

// newMeanConfig is a DGA config of point reporting hourly means.
func newMeanConfig(point string) store.NewConfig {
	return store.NewConfig{Point: point, Source: compliance.SourceDGASubterraneas,
		Params: compliance.Params{WorkCode: "OB-0602-9", CompanyRUT: rut("77555666"), InformantRUT: rut("20999888"),
			Frequency: compliance.Hourly, ValueMode: compliance.ValueMean},
		Credentials: &compliance.Credentials{Username: rut("20999888"), Password: "clave"},
		StartDate:   time.Now().Add(-48 * time.Hour)}
}

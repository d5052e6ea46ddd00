package query_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/query"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// Roles of the fixture's users. "own" points are P-OWN (and P-DEL); the
// foreign point P-FOREIGN belongs to the stranger.
const (
	roleAdmin         = "admin"
	rolePrimary       = "primary"
	roleSecondary     = "secondary"
	roleAdministrator = "administrator"
	roleStranger      = "stranger"

	pointOwn     = "P-OWN"
	pointForeign = "P-FOREIGN"
	deviceOwn    = "D-OWN"
	deviceFor    = "D-FOREIGN"
)

var roles = []string{roleAdmin, rolePrimary, roleSecondary, roleAdministrator, roleStranger}

// fixture is a migrated schema with users of every role, two points with a
// device each, and the API served over HTTP in front of it.
type fixture struct {
	t      testing.TB
	ctx    context.Context
	pool   *pgxpool.Pool
	acc    *accounts.Store
	sys    accounts.Principal
	users  map[string]accounts.User
	tokens map[string]string
	prod   *fakeProducer
	api    *query.API
	srv    *httptest.Server
	cfg    query.Config
	// metrics is the API's registry.
	metrics *prometheus.Registry
}

// fixtureOption changes the fixture's setup before the API is built.
type fixtureOption func(*fixture, *query.Deps)

// withProducer replaces the fake producer.
func withProducer(p query.Producer) fixtureOption {
	return func(_ *fixture, d *query.Deps) { d.Producer = p }
}

// withConfig changes the API configuration.
func withConfig(fn func(*query.Config)) fixtureOption {
	return func(f *fixture, _ *query.Deps) { fn(&f.cfg) }
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newFixture(tb testing.TB, opts ...fixtureOption) *fixture {
	tb.Helper()
	pool := testenv.Postgres(tb)
	ctx := testenv.Context(tb, 10*time.Minute)
	_, err := timescale.Migrate(ctx, pool, quietLog())
	require.NoError(tb, err)
	f := &fixture{t: tb, ctx: ctx, pool: pool, acc: accounts.New(pool), sys: accounts.System("test"),
		users: map[string]accounts.User{}, tokens: map[string]string{}, prod: &fakeProducer{}}

	for _, role := range roles {
		r := accounts.RoleUser
		if role == roleAdmin {
			r = accounts.RoleAdmin
		}
		u, err := f.acc.CreateUser(ctx, f.sys, accounts.NewUser{Email: role + "@example.cl", Name: role, Role: r})
		require.NoError(tb, err)
		f.users[role] = u
		tok, _, err := f.acc.CreateToken(ctx, f.sys, u.ID, "test", 0)
		require.NoError(tb, err)
		f.tokens[role] = tok
	}
	for _, p := range []string{pointOwn, pointForeign} {
		_, err := f.acc.CreatePoint(ctx, f.sys, points.Point{Code: p, Name: "Point " + p, Active: true})
		require.NoError(tb, err)
	}
	_, err = f.acc.AddDevice(ctx, f.sys, points.Device{ID: deviceOwn, Point: pointOwn, Provider: "generic-json", Active: true})
	require.NoError(tb, err)
	_, err = f.acc.AddDevice(ctx, f.sys, points.Device{ID: deviceFor, Point: pointForeign, Provider: "generic-json", Active: true})
	require.NoError(tb, err)
	for role, rel := range map[string]accounts.Relation{rolePrimary: accounts.RelationPrimary,
		roleSecondary: accounts.RelationSecondary, roleAdministrator: accounts.RelationAdministrator} {
		_, err := f.acc.Grant(ctx, f.sys, pointOwn, f.users[role].ID, rel, nil)
		require.NoError(tb, err)
	}
	_, err = f.acc.Grant(ctx, f.sys, pointForeign, f.users[roleStranger].ID, accounts.RelationPrimary, nil)
	require.NoError(tb, err)

	reg := providers.NewRegistry()
	require.NoError(tb, providers.RegisterBuiltin(reg))
	f.cfg = query.Config{API: config.Default().API, RawTopic: "telemetry.raw"}
	f.metrics = prometheus.NewRegistry()
	deps := query.Deps{Pool: pool, Accounts: f.acc, Producer: f.prod, Providers: reg,
		Registerer: f.metrics, Log: quietLog()}
	for _, o := range opts {
		o(f, &deps)
	}
	f.api, err = query.New(f.cfg, deps)
	require.NoError(tb, err)
	promReg := prometheus.NewRegistry()
	server := pipeline.NewServer(config.Default().HTTP, promReg, pipeline.NewHealth(time.Second), quietLog())
	server.Router().Mount("/api", f.api.Handler())
	f.srv = httptest.NewServer(server.Router())
	tb.Cleanup(f.srv.Close)
	return f
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	require.NoError(tb, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func (r response) String() string { return string(r.body) }

// req describes a request.
type req struct {
	method, path string
	token        string // "" sends no Authorization header
	auth         string // a raw Authorization header, overriding token
	body         any    // JSON-encoded unless []byte or string
	header       map[string]string
}

// do sends rq and reads the whole answer.
func (f *fixture) do(rq req) response {
	f.t.Helper()
	var body io.Reader
	switch b := rq.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		require.NoError(f.t, err)
		body = bytes.NewReader(js)
	}
	hr, err := http.NewRequestWithContext(f.ctx, rq.method, f.srv.URL+rq.path, body)
	require.NoError(f.t, err)
	if rq.token != "" {
		hr.Header.Set("Authorization", "Token "+rq.token)
	}
	if rq.auth != "" {
		hr.Header.Set("Authorization", rq.auth)
	}
	if _, ok := rq.body.([]byte); !ok && rq.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range rq.header {
		hr.Header.Set(k, v)
	}
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := cl.Do(hr)
	require.NoError(f.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(f.t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// as sends rq with the token of role.
func (f *fixture) as(role string, rq req) response {
	f.t.Helper()
	rq.token = f.tokens[role]
	return f.do(rq)
}

// auditRows returns the audit rows with the request id.
func (f *fixture) auditRows(requestID string) []audit.Event {
	f.t.Helper()
	rows, err := f.pool.Query(f.ctx, `SELECT id, action, actor, coalesce(actor_user_id, 0), entity_type, entity_id, coalesce(point, '')
		FROM audit_log WHERE request_id = $1 ORDER BY id`, requestID)
	require.NoError(f.t, err)
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (audit.Event, error) {
		var e audit.Event
		err := r.Scan(&e.ID, &e.Action, &e.Actor, &e.ActorUserID, &e.EntityType, &e.EntityID, &e.Point)
		return e, err
	})
	require.NoError(f.t, err)
	return evs
}

// reading is a row to insert into readings.
type reading struct {
	t        time.Time
	point    string
	variable string
	value    float64
	quality  int32
}

// insertReadings copies rows into readings.
func (f *fixture) insertReadings(rs []reading) {
	f.t.Helper()
	_, err := f.pool.CopyFrom(f.ctx, pgx.Identifier{"readings"}, []string{"time", "point", "variable", "value", "quality"},
		pgx.CopyFromSlice(len(rs), func(i int) ([]any, error) {
			r := rs[i]
			return []any{r.t, r.point, r.variable, r.value, r.quality}, nil
		}))
	require.NoError(f.t, err)
}

// refreshRollups folds readings in [from, to) into the three rollups with
// the sink's refresher (either storage mode).
func (f *fixture) refreshRollups(from, to time.Time) {
	f.t.Helper()
	ref, err := timescale.NewRefresher(f.ctx, f.pool, timescale.RefresherConfig{
		Rollups: config.Default().Rollups, Registerer: prometheus.NewRegistry(), Log: quietLog(),
	})
	require.NoError(f.t, err)
	ref.Touch(from, to)
	require.NoError(f.t, ref.Pass(f.ctx))
}

// fakeProducer acknowledges records as told: at once by default, or when
// the test releases them (hold), with err.
type fakeProducer struct {
	mu      sync.Mutex
	records []pipeline.Record
	err     error
	hold    chan struct{} // when set, acks wait for it to close
	started chan struct{} // when set, receives one value per Produce
}

func (p *fakeProducer) Produce(_ context.Context, r pipeline.Record, ack func(error)) {
	p.mu.Lock()
	p.records = append(p.records, r)
	err, hold, started := p.err, p.hold, p.started
	p.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	go func() {
		if hold != nil {
			<-hold
		}
		ack(err)
	}()
}

func (p *fakeProducer) produced() []pipeline.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pipeline.Record(nil), p.records...)
}

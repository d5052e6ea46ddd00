package accounts_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// root is the system principal the tests set things up with.
var root = accounts.System("test:root")

// fixture is a store on a fresh migrated schema.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	store *accounts.Store
	clock *testenv.Clock
}

func newFixture(t *testing.T, opts ...accounts.Option) *fixture {
	t.Helper()
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, 2*time.Minute)
	_, err := timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	clock := testenv.NewClock(time.Now().UTC().Truncate(time.Microsecond))
	opts = append([]accounts.Option{accounts.WithClock(clock.Now)}, opts...)
	return &fixture{t: t, ctx: ctx, pool: pool, store: accounts.New(pool, opts...), clock: clock}
}

func (f *fixture) user(email string, role accounts.Role) accounts.User {
	f.t.Helper()
	u, err := f.store.CreateUser(f.ctx, root, accounts.NewUser{Email: email, Name: "Test " + email, Role: role})
	require.NoError(f.t, err)
	return u
}

// login creates a token for the user and authenticates with it.
func (f *fixture) login(u accounts.User) accounts.Principal {
	f.t.Helper()
	tok, _, err := f.store.CreateToken(f.ctx, root, u.ID, "test", 0)
	require.NoError(f.t, err)
	p, err := f.store.Authenticate(f.ctx, tok)
	require.NoError(f.t, err)
	return p
}

func (f *fixture) point(code string) points.Point {
	f.t.Helper()
	p, err := f.store.CreatePoint(f.ctx, root, points.Point{Code: code, Name: "Well " + code, Active: true})
	require.NoError(f.t, err)
	return p
}

func (f *fixture) grant(point string, u accounts.User, rel accounts.Relation, perms ...accounts.Permission) {
	f.t.Helper()
	_, err := f.store.Grant(f.ctx, root, point, u.ID, rel, perms)
	require.NoError(f.t, err)
}

func (f *fixture) auditRows() int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.pool.QueryRow(f.ctx, `SELECT count(*) FROM audit_log`).Scan(&n))
	return n
}

func (f *fixture) lastAudit() audit.Event {
	f.t.Helper()
	evs, err := audit.List(f.ctx, f.pool, audit.Filter{Limit: 1})
	require.NoError(f.t, err)
	require.Len(f.t, evs, 1)
	return evs[0]
}

package store_test

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/sinks/timescale"
)

var actor = store.SystemActor("test:root")

type fixture struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	store *store.Store
}

func testKey() config.Secret {
	return config.Secret(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, 2*time.Minute)
	_, err := timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	sealer, err := compliance.NewSealer(testKey())
	require.NoError(t, err)
	st := store.New(pool, sealer)
	srcs, err := compliance.Sources(config.Default().Compliance)
	require.NoError(t, err)
	require.NoError(t, st.SyncSources(ctx, srcs))
	return &fixture{t: t, ctx: ctx, pool: pool, store: st}
}

func (f *fixture) point(code string) {
	f.t.Helper()
	_, err := f.pool.Exec(f.ctx, `INSERT INTO catchment_points (code, name) VALUES ($1, $1)`, code)
	require.NoError(f.t, err)
}

func dgaParams() compliance.Params {
	return compliance.Params{WorkCode: "OB-0602-7", CompanyRUT: "77555666-" + compliance.RUTCheckDigit("77555666"),
		InformantRUT: "20999888-" + compliance.RUTCheckDigit("20999888"), Frequency: compliance.Hourly}
}

func date(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

func ptr[T any](v T) *T { return &v }

// config creates a DGA groundwater config of point from start.
func (f *fixture) config(point, start string) store.Config {
	f.t.Helper()
	c, err := f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: point, Source: compliance.SourceDGASubterraneas,
		Params: dgaParams(), Credentials: &compliance.Credentials{Username: "u", Password: "secret-pw"}, StartDate: date(start)})
	require.NoError(f.t, err)
	return c
}

func (f *fixture) status(id int64) string {
	f.t.Helper()
	var s string
	require.NoError(f.t, f.pool.QueryRow(f.ctx, `SELECT status FROM compliance_submissions WHERE id = $1`, id).Scan(&s))
	return s
}

package timescale_test

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/sinks/timescale"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestMigrationsParse(t *testing.T) {
	migs, err := timescale.Migrations()
	require.NoError(t, err)
	require.NotEmpty(t, migs)
	for i, m := range migs {
		require.Equal(t, i+1, m.Version)
		require.NotEmpty(t, m.SQL(timescale.ModeTimescale), "%04d timescale", m.Version)
		require.NotEmpty(t, m.SQL(timescale.ModePostgres), "%04d postgres", m.Version)
	}
}

func TestMigrateIntegration(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, 2*time.Minute)

	st, err := timescale.Status(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, 0, st.Applied)
	require.NotEmpty(t, st.Pending)
	require.ErrorIs(t, timescale.CheckMigrated(ctx, pool), timescale.ErrNotMigrated)

	first, err := timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	migs, _ := timescale.Migrations()
	require.Len(t, first.Applied, len(migs))
	mode, err := timescale.DetectMode(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, mode, first.Mode)
	t.Logf("migrated in mode %s", first.Mode)

	// Twice: nothing more to do.
	second, err := timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	require.Empty(t, second.Applied)
	require.Equal(t, len(migs), second.Already)
	require.NoError(t, timescale.CheckMigrated(ctx, pool))

	// The contract table exists with its key: a duplicate (point, variable,
	// time) is refused whatever the mode.
	ts := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	_, err = pool.Exec(ctx, `INSERT INTO readings (time, point, variable, value) VALUES ($1, 'P1', 'flow', 1.5)`, ts)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO readings (time, point, variable, value) VALUES ($1, 'P1', 'flow', 2.5)`, ts)
	require.ErrorContains(t, err, "duplicate key")
}

func TestMigrateConcurrentlyIntegration(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, 2*time.Minute)
	const n = 6
	results := make([]timescale.MigrateResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = timescale.Migrate(ctx, pool, quiet) })
	}
	wg.Wait()
	migs, _ := timescale.Migrations()
	total := 0
	for i := range n {
		require.NoError(t, errs[i])
		total += len(results[i].Applied)
	}
	require.Equal(t, len(migs), total, "each migration applied exactly once across concurrent runs")
	var rows int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows))
	require.Equal(t, len(migs), rows)
}

func TestEditedMigrationIsRefusedIntegration(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, time.Minute)
	_, err := timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1`)
	require.NoError(t, err)
	_, err = timescale.Migrate(ctx, pool, quiet)
	require.ErrorContains(t, err, "was changed after it was applied")
}

func TestPlainPartitionsIntegration(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, time.Minute)
	res, err := timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	if res.Mode != timescale.ModePostgres {
		t.Skip("database has timescaledb; the partitioned-table path applies to plain PostgreSQL")
	}
	// A reading years in the past lands in the default partition, and moves
	// to its own month when that partition is created.
	old := time.Date(2019, 6, 15, 12, 0, 0, 0, time.UTC)
	_, err = pool.Exec(ctx, `INSERT INTO readings (time, point, variable, value) VALUES ($1, 'P', 'level', 3)`, old)
	require.NoError(t, err)
	var created int
	require.NoError(t, pool.QueryRow(ctx, `SELECT stackvps_ensure_readings_partitions($1, $2)`, old, old.Add(time.Hour)).Scan(&created))
	require.Equal(t, 1, created)
	var part string
	require.NoError(t, pool.QueryRow(ctx, `SELECT tableoid::regclass::text FROM readings WHERE time = $1`, old).Scan(&part))
	require.Contains(t, part, "readings_p201906")
	// Idempotent.
	require.NoError(t, pool.QueryRow(ctx, `SELECT stackvps_ensure_readings_partitions($1, $2)`, old, old.Add(time.Hour)).Scan(&created))
	require.Equal(t, 0, created)
}

func TestBadMigrationSets(t *testing.T) {
	cases := []struct {
		name  string
		files fstest.MapFS
		want  string
	}{
		{"bad name", fstest.MapFS{"m/1_x.sql": {}}, "name must be"},
		{"gap", fstest.MapFS{"m/0001_a.sql": {Data: []byte("x")}, "m/0003_c.sql": {Data: []byte("x")}}, "without gaps"},
		{"half pair", fstest.MapFS{"m/0001_a.timescale.sql": {Data: []byte("x")}}, "lacks a file for one mode"},
		{"two names", fstest.MapFS{"m/0001_a.timescale.sql": {Data: []byte("x")}, "m/0001_b.postgres.sql": {Data: []byte("x")}}, "two names"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := timescale.ParseMigrations(tc.files, "m")
			require.ErrorContains(t, err, tc.want)
		})
	}
}

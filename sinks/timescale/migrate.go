package timescale

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Mode is the storage path a database was migrated with.
type Mode string

const (
	// ModeTimescale uses hypertables and continuous aggregates.
	ModeTimescale Mode = "timescaledb"
	// ModePostgres uses partitioned tables and views kept fresh by the
	// pipeline; analysts see the same names.
	ModePostgres Mode = "postgres"
)

// Migration is one versioned schema change. A file NNNN_name.sql applies in
// both modes; NNNN_name.timescale.sql and NNNN_name.postgres.sql come in
// pairs, one per mode. A file whose first line is
// "-- stackvps:no-transaction" runs outside a transaction (continuous
// aggregates require it); such a file must be safe to re-run.
type Migration struct {
	Version int
	Name    string
	sql     map[Mode]string
}

// SQL returns the migration's text for mode.
func (m Migration) SQL(mode Mode) string { return m.sql[mode] }

// Checksum identifies the text applied in mode, so an edited migration that
// was already applied is caught.
func (m Migration) Checksum(mode Mode) string {
	sum := sha256.Sum256([]byte(m.sql[mode]))
	return hex.EncodeToString(sum[:8])
}

func (m Migration) transactional(mode Mode) bool {
	return !strings.HasPrefix(m.sql[mode], "-- stackvps:no-transaction")
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+?)(?:\.(timescale|postgres))?\.sql$`)

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) { return parseMigrations(migrationFiles, "migrations") }

func parseMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name must be NNNN_name[.timescale|.postgres].sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		data, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		mig := byVersion[v]
		if mig == nil {
			mig = &Migration{Version: v, Name: m[2], sql: map[Mode]string{}}
			byVersion[v] = mig
		}
		if mig.Name != m[2] {
			return nil, fmt.Errorf("migration %04d has two names: %s and %s", v, mig.Name, m[2])
		}
		modes := []Mode{ModeTimescale, ModePostgres}
		switch m[3] {
		case "timescale":
			modes = []Mode{ModeTimescale}
		case "postgres":
			modes = []Mode{ModePostgres}
		}
		for _, mode := range modes {
			if _, dup := mig.sql[mode]; dup {
				return nil, fmt.Errorf("migration %04d has two files for mode %s", v, mode)
			}
			mig.sql[mode] = string(data)
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		if len(m.sql) != 2 {
			return nil, fmt.Errorf("migration %04d_%s lacks a file for one mode (want .timescale.sql and .postgres.sql, or one .sql)", m.Version, m.Name)
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration versions must be 1, 2, 3, ... without gaps; found %04d at position %d", m.Version, i+1)
		}
	}
	return out, nil
}

// Applied is one row of schema_migrations.
type Applied struct {
	Version   int
	Name      string
	Mode      Mode
	Checksum  string
	AppliedAt time.Time
}

// MigrateResult says what Migrate did.
type MigrateResult struct {
	Mode    Mode
	Applied []Migration // applied by this call
	Already int         // applied before
}

// DetectMode returns ModeTimescale when the timescaledb extension is
// installed in the database or can be created there (available and preloaded),
// ModePostgres otherwise.
func DetectMode(ctx context.Context, q querier) (Mode, error) {
	var installed, available bool
	var preload string
	err := q.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
		EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
		current_setting('shared_preload_libraries')`).Scan(&installed, &available, &preload)
	if err != nil {
		return "", fmt.Errorf("detecting timescaledb: %w", err)
	}
	if installed || (available && strings.Contains(preload, "timescaledb")) {
		return ModeTimescale, nil
	}
	return ModePostgres, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	name       text        NOT NULL,
	mode       text        NOT NULL,
	checksum   text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// Migrate applies every migration not yet applied, each once, each in its own
// transaction, holding an advisory lock so several processes can run it at
// once (the others wait, then find nothing to do). The mode is detected on the
// first run and kept afterwards, so installing TimescaleDB later does not mix
// paths; doctor reports the mismatch.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) (MigrateResult, error) {
	migs, err := Migrations()
	if err != nil {
		return MigrateResult{}, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return MigrateResult{}, fmt.Errorf("connecting: %w", err)
	}
	defer conn.Release()
	// The lock is per schema so tests in their own schemas do not queue.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('stackvps.migrate.' || current_schema()))`); err != nil {
		return MigrateResult{}, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must go even when ctx was cancelled.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock(hashtext('stackvps.migrate.' || current_schema()))`); err != nil {
			// Closing the connection releases the lock for sure.
			_ = conn.Conn().Close(uctx)
		}
	}()
	if _, err := conn.Exec(ctx, createMigrationsTable); err != nil {
		return MigrateResult{}, fmt.Errorf("creating schema_migrations: %w", err)
	}
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return MigrateResult{}, err
	}
	mode, err := DetectMode(ctx, conn)
	if err != nil {
		return MigrateResult{}, err
	}
	if len(applied) > 0 {
		if prev := applied[0].Mode; prev != mode {
			log.Warn("database was migrated in another mode; keeping it", "migrated_mode", prev, "detected_mode", mode)
			mode = prev
		}
	}
	res := MigrateResult{Mode: mode}
	done := map[int]Applied{}
	for _, a := range applied {
		done[a.Version] = a
	}
	for _, m := range migs {
		if a, ok := done[m.Version]; ok {
			if a.Checksum != m.Checksum(mode) {
				return res, fmt.Errorf("migration %04d_%s was changed after it was applied (checksum %s, now %s); add a new migration instead",
					m.Version, m.Name, a.Checksum, m.Checksum(mode))
			}
			res.Already++
			continue
		}
		start := time.Now()
		if err := apply(ctx, conn.Conn(), m, mode); err != nil {
			return res, err
		}
		log.Info("migration applied", "version", m.Version, "name", m.Name, "mode", mode, "duration_ms", time.Since(start).Milliseconds())
		res.Applied = append(res.Applied, m)
	}
	for v := range done {
		if v > len(migs) {
			return res, fmt.Errorf("database has migration %04d, newer than this binary knows (%d): run a newer stackvps", v, len(migs))
		}
	}
	return res, nil
}

func apply(ctx context.Context, conn *pgx.Conn, m Migration, mode Mode) error {
	const insert = `INSERT INTO schema_migrations (version, name, mode, checksum) VALUES ($1, $2, $3, $4)`
	if !m.transactional(mode) {
		if _, err := conn.Exec(ctx, m.SQL(mode)); err != nil {
			return fmt.Errorf("applying migration %04d_%s (%s): %w", m.Version, m.Name, mode, err)
		}
		if _, err := conn.Exec(ctx, insert, m.Version, m.Name, string(mode), m.Checksum(mode)); err != nil {
			return fmt.Errorf("recording migration %04d_%s: %w", m.Version, m.Name, err)
		}
		return nil
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, m.SQL(mode)); err != nil {
			return fmt.Errorf("applying migration %04d_%s (%s): %w", m.Version, m.Name, mode, err)
		}
		if _, err := tx.Exec(ctx, insert, m.Version, m.Name, string(mode), m.Checksum(mode)); err != nil {
			return fmt.Errorf("recording migration %04d_%s: %w", m.Version, m.Name, err)
		}
		return nil
	})
}

func appliedMigrations(ctx context.Context, conn *pgxpool.Conn) ([]Applied, error) {
	rows, err := conn.Query(ctx, `SELECT version, name, mode, checksum, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("reading schema_migrations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Applied, error) {
		var a Applied
		var mode string
		err := r.Scan(&a.Version, &a.Name, &mode, &a.Checksum, &a.AppliedAt)
		a.Mode = Mode(mode)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading schema_migrations: %w", err)
	}
	return out, nil
}

// MigrationStatus compares the database with the binary's migrations.
type MigrationStatus struct {
	Mode     Mode // as migrated; empty when nothing was applied
	Detected Mode // what DetectMode says now
	Applied  int
	Known    int
	Pending  []string // NNNN_name of migrations not applied
}

// Status reports which migrations are applied, without changing anything.
func Status(ctx context.Context, pool *pgxpool.Pool) (MigrationStatus, error) {
	migs, err := Migrations()
	if err != nil {
		return MigrationStatus{}, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return MigrationStatus{}, fmt.Errorf("connecting: %w", err)
	}
	defer conn.Release()
	st := MigrationStatus{Known: len(migs)}
	if st.Detected, err = DetectMode(ctx, conn); err != nil {
		return st, err
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass(quote_ident(current_schema()) || '.schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return st, fmt.Errorf("looking for schema_migrations: %w", err)
	}
	done := map[int]bool{}
	if exists {
		applied, err := appliedMigrations(ctx, conn)
		if err != nil {
			return st, err
		}
		for _, a := range applied {
			done[a.Version] = true
			st.Mode = a.Mode
		}
		st.Applied = len(applied)
	}
	for _, m := range migs {
		if !done[m.Version] {
			st.Pending = append(st.Pending, fmt.Sprintf("%04d_%s", m.Version, m.Name))
		}
	}
	return st, nil
}

// ErrNotMigrated is returned by CheckMigrated when migrations are pending.
var ErrNotMigrated = errors.New("database is not fully migrated (run `stackvps migrate`)")

// CheckMigrated returns ErrNotMigrated (wrapped with the pending names) unless
// every migration is applied.
func CheckMigrated(ctx context.Context, pool *pgxpool.Pool) error {
	st, err := Status(ctx, pool)
	if err != nil {
		return err
	}
	if len(st.Pending) > 0 {
		return fmt.Errorf("%w: pending %s", ErrNotMigrated, strings.Join(st.Pending, ", "))
	}
	return nil
}

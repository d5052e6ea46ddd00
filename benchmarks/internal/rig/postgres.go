package rig

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/sinks/timescale"
)

// ReadingColumns are the columns the sink copies, in its order
// (sinks/timescale/writer.go).
var ReadingColumns = []string{"time", "point", "variable", "value", "quality", "device", "raw_value", "raw_unit"}

// CopyRows is the raw limit of the sink: one binary COPY of rows into
// readings on one connection, in its own implicit transaction, with nothing
// else (no savepoint, no offsets, no decoding, no de-duplication). The
// values are bound as the writer binds them.
func CopyRows(ctx context.Context, pool *pgxpool.Pool, rows []timescale.Row) (int64, error) {
	return pool.CopyFrom(ctx, pgx.Identifier{"readings"}, ReadingColumns, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := rows[i]
		var dev *string
		if r.Device != "" {
			dev = &r.Device
		}
		return []any{r.Time, r.Point, r.Variable, r.Value, r.Quality, dev, r.RawValue, r.RawUnit}, nil
	}))
}

// Truncate empties readings and sink_offsets, so every round starts from the
// same table.
func Truncate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `TRUNCATE readings, sink_offsets`)
	return err
}

// EnsurePartitions creates, on plain PostgreSQL, the monthly partitions of
// readings covering rows, so the raw COPY and the writer write into the same
// partitions. It does nothing on TimescaleDB.
func EnsurePartitions(ctx context.Context, pool *pgxpool.Pool, rows []timescale.Row) error {
	st, err := timescale.Status(ctx, pool)
	if err != nil {
		return err
	}
	if st.Mode != timescale.ModePostgres || len(rows) == 0 {
		return nil
	}
	lo, hi := rows[0].Time, rows[0].Time
	for _, r := range rows {
		if r.Time.Before(lo) {
			lo = r.Time
		}
		if r.Time.After(hi) {
			hi = r.Time
		}
	}
	_, err = pool.Exec(ctx, `SELECT stackvps_ensure_readings_partitions($1, $2)`, lo, hi.Add(time.Second))
	return err
}

// Schema is a PostgreSQL schema of its own, for a program (the e2e
// benchmark) that has no testing.TB for internal/testenv.
type Schema struct {
	Name string
	// URL selects the schema (search_path=<name>,public).
	URL string
	raw string
}

// CreateSchema creates schema name in the database at raw and returns it.
func CreateSchema(ctx context.Context, raw, name string) (*Schema, error) {
	conn, err := pgx.Connect(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("creating schema %s: %w", name, err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	q := u.Query()
	q.Set("search_path", name+",public")
	u.RawQuery = q.Encode()
	return &Schema{Name: name, URL: u.String(), raw: raw}, nil
}

// Drop drops the schema and everything in it.
func (s *Schema) Drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.raw)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	_, err = conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{s.Name}.Sanitize()+` CASCADE`)
	return err
}

// Migrate applies the migrations to the schema at url and returns a pool on
// it.
func Migrate(ctx context.Context, dbURL string) (*pgxpool.Pool, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	if _, err := timescale.Migrate(ctx, pool, Discard); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

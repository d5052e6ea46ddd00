// Package timescale is Stack VPS's storage: the embedded migrations of every
// table (hypertables and continuous aggregates when TimescaleDB is installed,
// partitioned tables and incrementally refreshed views on plain PostgreSQL,
// under the same names), and the connection pool every store shares.
package timescale

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/config"
)

// Connect opens a pool from the database section and checks that the server
// answers. The error never contains the password.
func Connect(ctx context.Context, cfg config.Database) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.URL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	pc.MaxConns = int32(cfg.MaxConns)
	pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout.Std()
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = "stackvps"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("creating database pool: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout.Std())
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to postgres at %s: %w", config.RedactURL(cfg.URL.Reveal()), err)
	}
	return pool, nil
}

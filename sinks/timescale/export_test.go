package timescale

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ParseMigrations exposes parseMigrations to the external tests.
var ParseMigrations = parseMigrations

// MigrateTo applies the migrations up to version as Migrate does, so an
// upgrade test can start from an older schema.
func MigrateTo(ctx context.Context, pool *pgxpool.Pool, version int) (Mode, error) {
	migs, err := Migrations()
	if err != nil {
		return "", err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, createMigrationsTable); err != nil {
		return "", err
	}
	mode, err := DetectMode(ctx, conn)
	if err != nil {
		return "", err
	}
	for _, m := range migs {
		if m.Version > version {
			break
		}
		if err := apply(ctx, conn.Conn(), m, mode); err != nil {
			return "", err
		}
	}
	return mode, nil
}

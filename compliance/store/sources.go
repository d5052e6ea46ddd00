package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/compliance"
)

// SyncSources makes compliance_sources hold exactly srcs (from
// compliance.Sources): each is inserted or updated (a row that already
// matches is not touched), and a source in the table but not in srcs is
// deactivated (rows are never deleted: configs and submissions refer to
// them). Idempotent; safe to run concurrently (`stackvps migrate`, the
// scheduler and the submit stage all call it).
func (s *Store) SyncSources(ctx context.Context, srcs []compliance.Source) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialise concurrent syncs so the deactivation below sees a
		// consistent set.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('stackvps.compliance_sources.' || current_schema()))`); err != nil {
			return fmt.Errorf("locking compliance_sources: %w", err)
		}
		codes := make([]string, 0, len(srcs))
		for _, src := range srcs {
			schema, settings := jsonOr(src.Schema, "{}"), jsonOr(src.Settings, "{}")
			vars := src.Variables
			if vars == nil {
				vars = []string{}
			}
			_, err := tx.Exec(ctx, `INSERT INTO compliance_sources AS s (code, name, protocol, endpoint, time_zone, variables,
					required_schema, settings, min_interval, request_timeout, retry_rejected_after, max_attempts, active)
				VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9::bigint * interval '1 microsecond',
					$10::bigint * interval '1 microsecond', $11::bigint * interval '1 microsecond', $12, $13)
				ON CONFLICT (code) DO UPDATE SET name = excluded.name, protocol = excluded.protocol,
					endpoint = excluded.endpoint, time_zone = excluded.time_zone, variables = excluded.variables,
					required_schema = excluded.required_schema, settings = excluded.settings,
					min_interval = excluded.min_interval, request_timeout = excluded.request_timeout,
					retry_rejected_after = excluded.retry_rejected_after, max_attempts = excluded.max_attempts,
					active = excluded.active, updated_at = now()
				WHERE (s.name, s.protocol, s.endpoint, s.time_zone, s.variables, s.required_schema, s.settings,
					s.min_interval, s.request_timeout, s.retry_rejected_after, s.max_attempts, s.active)
					IS DISTINCT FROM (excluded.name, excluded.protocol, excluded.endpoint, excluded.time_zone,
					excluded.variables, excluded.required_schema, excluded.settings, excluded.min_interval,
					excluded.request_timeout, excluded.retry_rejected_after, excluded.max_attempts, excluded.active)`,
				src.Code, src.Name, src.Protocol, src.Endpoint, src.TimeZone, vars, schema, settings,
				micros(src.MinInterval), micros(src.RequestTimeout), micros(src.RetryRejectedAfter),
				max(src.MaxAttempts, 1), src.Active)
			if err != nil {
				return fmt.Errorf("syncing compliance source %s: %w", src.Code, err)
			}
			codes = append(codes, src.Code)
		}
		if _, err := tx.Exec(ctx, `UPDATE compliance_sources SET active = false, updated_at = now()
			WHERE active AND NOT code = ANY ($1)`, codes); err != nil {
			return fmt.Errorf("deactivating compliance sources no longer configured: %w", err)
		}
		return nil
	})
}

func jsonOr(b json.RawMessage, def string) string {
	if len(b) == 0 {
		return def
	}
	return string(b)
}

const sourceColumns = `code, name, protocol, endpoint, time_zone, variables, required_schema, settings,
	(extract(epoch FROM min_interval) * 1000000)::bigint, (extract(epoch FROM request_timeout) * 1000000)::bigint,
	(extract(epoch FROM retry_rejected_after) * 1000000)::bigint, max_attempts, active`

func scanSource(r pgx.Row) (compliance.Source, error) {
	var src compliance.Source
	var schema, settings []byte
	var minI, timeout, retry int64
	err := r.Scan(&src.Code, &src.Name, &src.Protocol, &src.Endpoint, &src.TimeZone, &src.Variables, &schema, &settings,
		&minI, &timeout, &retry, &src.MaxAttempts, &src.Active)
	src.Schema, src.Settings = schema, settings
	src.MinInterval, src.RequestTimeout, src.RetryRejectedAfter = fromMicros(minI), fromMicros(timeout), fromMicros(retry)
	return src, err
}

// Sources returns every source in compliance_sources, active or not,
// ordered by code.
func (s *Store) Sources(ctx context.Context) ([]compliance.Source, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sourceColumns+` FROM compliance_sources ORDER BY code`)
	if err != nil {
		return nil, fmt.Errorf("reading compliance sources: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (compliance.Source, error) { return scanSource(r) })
	if err != nil {
		return nil, fmt.Errorf("reading compliance sources: %w", err)
	}
	return out, nil
}

// Source returns the source with code; ErrNotFound when there is none.
func (s *Store) Source(ctx context.Context, code string) (compliance.Source, error) {
	return getSource(ctx, s.pool, code)
}

func getSource(ctx context.Context, q querier, code string) (compliance.Source, error) {
	src, err := scanSource(q.QueryRow(ctx, `SELECT `+sourceColumns+` FROM compliance_sources WHERE code = $1`, code))
	if errors.Is(err, pgx.ErrNoRows) {
		return src, fmt.Errorf("compliance source %q %w", code, ErrNotFound)
	}
	if err != nil {
		return src, fmt.Errorf("reading compliance source %s: %w", code, err)
	}
	return src, nil
}

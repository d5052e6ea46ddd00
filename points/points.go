// Package points is the store of catchment points and the devices that
// report for them. The normalize stage maps a payload's device to its point
// through it; admin and the API manage them.
package points

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Point is a well or surface intake.
type Point struct {
	Code      string
	Name      string
	Kind      string // well, surface or other
	Timezone  string // IANA zone for local days; default America/Santiago
	Latitude  *float64
	Longitude *float64
	Active    bool
}

// Device is a sensor or logger reporting for one point.
type Device struct {
	ID       string
	Point    string
	Provider string
	Active   bool
}

// ErrNotFound is returned for a point or device that does not exist.
var ErrNotFound = errors.New("not found")

// Store reads and writes points and devices. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// UpsertPoint creates or updates a point.
func (s *Store) UpsertPoint(ctx context.Context, p Point) error {
	if p.Kind == "" {
		p.Kind = "well"
	}
	if p.Timezone == "" {
		p.Timezone = "America/Santiago"
	}
	if p.Name == "" {
		p.Name = p.Code
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO catchment_points (code, name, kind, timezone, latitude, longitude, active)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind, timezone = EXCLUDED.timezone,
			latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, active = EXCLUDED.active, updated_at = now()`,
		p.Code, p.Name, p.Kind, p.Timezone, p.Latitude, p.Longitude, p.Active)
	if err != nil {
		return fmt.Errorf("saving point %s: %w", p.Code, err)
	}
	return nil
}

// UpsertDevices creates or updates devices in one transaction.
func (s *Store) UpsertDevices(ctx context.Context, ds ...Device) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, d := range ds {
			_, err := tx.Exec(ctx, `INSERT INTO devices (id, point, provider, active) VALUES ($1, $2, NULLIF($3, ''), $4)
				ON CONFLICT (id) DO UPDATE SET point = EXCLUDED.point, provider = EXCLUDED.provider,
					active = EXCLUDED.active, updated_at = now()`, d.ID, d.Point, d.Provider, d.Active)
			if err != nil {
				return fmt.Errorf("saving device %s: %w", d.ID, err)
			}
		}
		return nil
	})
}

// Devices returns every device.
func (s *Store) Devices(ctx context.Context) ([]Device, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, point, coalesce(provider, ''), active FROM devices`)
	if err != nil {
		return nil, fmt.Errorf("reading devices: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Device, error) {
		var d Device
		err := r.Scan(&d.ID, &d.Point, &d.Provider, &d.Active)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading devices: %w", err)
	}
	return out, nil
}

// WatchDevices calls onChange whenever the devices table of this schema
// changes, until ctx is done. It reconnects after a lost connection (calling
// onChange then too, since changes may have been missed) and returns only
// ctx's error.
func (s *Store) WatchDevices(ctx context.Context, onChange func()) error {
	for attempt := 0; ; attempt++ {
		err := s.watchOnce(ctx, onChange, &attempt)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_ = err // the caller's periodic refresh covers the gap; retry with backoff
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Duration(1<<min(attempt, 5))*200*time.Millisecond, 5*time.Second)):
		}
		onChange()
	}
}

func (s *Store) watchOnce(ctx context.Context, onChange func(), attempt *int) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection leaves the pool for good: it is LISTENing.
	conn := pc.Hijack()
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var schema string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `LISTEN stackvps_devices`); err != nil {
		return err
	}
	*attempt = 0
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		// The channel is database-wide; each schema is its own deployment.
		if n.Payload == schema {
			onChange()
		}
	}
}

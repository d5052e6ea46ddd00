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
	"github.com/jackc/pgx/v5/pgconn"
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

// ErrExists is returned when creating a point or device whose code or id is
// already taken.
var ErrExists = errors.New("already exists")

// querier is what reads run on: the pool or a pgx.Tx.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const pointColumns = `code, name, kind, timezone, latitude, longitude, active`

func scanPoint(r pgx.Row) (Point, error) {
	var p Point
	err := r.Scan(&p.Code, &p.Name, &p.Kind, &p.Timezone, &p.Latitude, &p.Longitude, &p.Active)
	return p, err
}

func scanDevice(r pgx.Row) (Device, error) {
	var d Device
	err := r.Scan(&d.ID, &d.Point, &d.Provider, &d.Active)
	return d, err
}

// GetPoint returns the point with code, or ErrNotFound.
func (s *Store) GetPoint(ctx context.Context, code string) (Point, error) {
	return getPoint(ctx, s.pool, code, "")
}

// GetPoints returns the points among codes that exist, ordered by code. No
// codes means no points (never all of them).
func (s *Store) GetPoints(ctx context.Context, codes []string) ([]Point, error) {
	if len(codes) == 0 {
		return nil, nil
	}
	return listPoints(ctx, s.pool, `SELECT `+pointColumns+` FROM catchment_points WHERE code = ANY($1) ORDER BY code`, codes)
}

// ListPoints returns every point, ordered by code.
func (s *Store) ListPoints(ctx context.Context) ([]Point, error) {
	return listPoints(ctx, s.pool, `SELECT `+pointColumns+` FROM catchment_points ORDER BY code`)
}

// DevicesOf returns the devices of point, ordered by id.
func (s *Store) DevicesOf(ctx context.Context, point string) ([]Device, error) {
	return devicesOf(ctx, s.pool, point)
}

func getPoint(ctx context.Context, q querier, code, lock string) (Point, error) {
	p, err := scanPoint(q.QueryRow(ctx, `SELECT `+pointColumns+` FROM catchment_points WHERE code = $1 `+lock, code))
	if errors.Is(err, pgx.ErrNoRows) {
		return Point{}, fmt.Errorf("point %q: %w", code, ErrNotFound)
	}
	if err != nil {
		return Point{}, fmt.Errorf("reading point %s: %w", code, err)
	}
	return p, nil
}

func listPoints(ctx context.Context, q querier, sql string, args ...any) ([]Point, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("reading points: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Point, error) { return scanPoint(r) })
	if err != nil {
		return nil, fmt.Errorf("reading points: %w", err)
	}
	return out, nil
}

func devicesOf(ctx context.Context, q querier, point string) ([]Device, error) {
	rows, err := q.Query(ctx, `SELECT id, point, coalesce(provider, ''), active FROM devices WHERE point = $1 ORDER BY id`, point)
	if err != nil {
		return nil, fmt.Errorf("reading devices of %s: %w", point, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Device, error) { return scanDevice(r) })
	if err != nil {
		return nil, fmt.Errorf("reading devices of %s: %w", point, err)
	}
	return out, nil
}

// Tx is the store's operations inside a caller's transaction, so a change
// and the caller's own writes (the audit log) commit or roll back together.
// Reads meant to be the "before" of a change lock the row (FOR UPDATE) until
// the transaction ends. A Tx lives as long as its transaction.
type Tx struct{ tx pgx.Tx }

// InTx returns the store's operations on tx.
func (s *Store) InTx(tx pgx.Tx) Tx { return Tx{tx: tx} }

// PointForUpdate returns the point with code, locked until the transaction
// ends, or ErrNotFound.
func (t Tx) PointForUpdate(ctx context.Context, code string) (Point, error) {
	return getPoint(ctx, t.tx, code, "FOR UPDATE")
}

// InsertPoint creates a point; ErrExists when its code is taken. Empty kind,
// timezone and name get the same defaults as UpsertPoint.
func (t Tx) InsertPoint(ctx context.Context, p Point) (Point, error) {
	if p.Kind == "" {
		p.Kind = "well"
	}
	if p.Timezone == "" {
		p.Timezone = "America/Santiago"
	}
	if p.Name == "" {
		p.Name = p.Code
	}
	tag, err := t.tx.Exec(ctx, `INSERT INTO catchment_points (code, name, kind, timezone, latitude, longitude, active)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (code) DO NOTHING`,
		p.Code, p.Name, p.Kind, p.Timezone, p.Latitude, p.Longitude, p.Active)
	if err != nil {
		return Point{}, fmt.Errorf("creating point %s: %w", p.Code, err)
	}
	if tag.RowsAffected() == 0 {
		return Point{}, fmt.Errorf("point %q: %w", p.Code, ErrExists)
	}
	return p, nil
}

// UpdatePoint overwrites the point p.Code with p; ErrNotFound when it does
// not exist.
func (t Tx) UpdatePoint(ctx context.Context, p Point) error {
	return t.execOne(ctx, "updating", "point", p.Code, `UPDATE catchment_points SET name = $2, kind = $3, timezone = $4, latitude = $5,
		longitude = $6, active = $7, updated_at = now() WHERE code = $1`, p.Code, p.Name, p.Kind, p.Timezone, p.Latitude, p.Longitude, p.Active)
}

// DeletePoint removes the point with code; ErrNotFound when it does not
// exist. A point that still has devices cannot be deleted (the database
// refuses with a foreign key violation).
func (t Tx) DeletePoint(ctx context.Context, code string) error {
	return t.execOne(ctx, "deleting", "point", code, `DELETE FROM catchment_points WHERE code = $1`, code)
}

// DeviceForUpdate returns the device with id, locked until the transaction
// ends, or ErrNotFound.
func (t Tx) DeviceForUpdate(ctx context.Context, id string) (Device, error) {
	d, err := scanDevice(t.tx.QueryRow(ctx, `SELECT id, point, coalesce(provider, ''), active FROM devices WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Device{}, fmt.Errorf("device %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, fmt.Errorf("reading device %s: %w", id, err)
	}
	return d, nil
}

// DevicesOf returns the devices of point, ordered by id.
func (t Tx) DevicesOf(ctx context.Context, point string) ([]Device, error) {
	return devicesOf(ctx, t.tx, point)
}

// InsertDevice creates a device; ErrExists when its id is taken.
func (t Tx) InsertDevice(ctx context.Context, d Device) error {
	tag, err := t.tx.Exec(ctx, `INSERT INTO devices (id, point, provider, active) VALUES ($1, $2, NULLIF($3, ''), $4)
		ON CONFLICT (id) DO NOTHING`, d.ID, d.Point, d.Provider, d.Active)
	if err != nil {
		return fmt.Errorf("creating device %s: %w", d.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("device %q: %w", d.ID, ErrExists)
	}
	return nil
}

// UpdateDevice overwrites the device d.ID with d; ErrNotFound when it does
// not exist.
func (t Tx) UpdateDevice(ctx context.Context, d Device) error {
	return t.execOne(ctx, "updating", "device", d.ID, `UPDATE devices SET point = $2, provider = NULLIF($3, ''), active = $4, updated_at = now()
		WHERE id = $1`, d.ID, d.Point, d.Provider, d.Active)
}

// DeleteDevice removes the device with id; ErrNotFound when it does not
// exist.
func (t Tx) DeleteDevice(ctx context.Context, id string) error {
	return t.execOne(ctx, "deleting", "device", id, `DELETE FROM devices WHERE id = $1`, id)
}

// execOne runs a statement that must touch exactly one row of kind
// ("point", "device") id: ErrNotFound when it touched none. doing
// ("updating") words the error.
func (t Tx) execOne(ctx context.Context, doing, kind, id, sql string, args ...any) error {
	tag, err := t.tx.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s %s %s: %w", doing, kind, id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s %q: %w", kind, id, ErrNotFound)
	}
	return nil
}

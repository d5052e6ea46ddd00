package accounts

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/points"
)

// pointJSON is a point's state in the audit log.
type pointJSON struct {
	Code      string   `json:"code"`
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Timezone  string   `json:"timezone"`
	Latitude  *float64 `json:"latitude"`
	Longitude *float64 `json:"longitude"`
	Active    bool     `json:"active"`
}

func pointAudit(p points.Point) pointJSON {
	return pointJSON{Code: p.Code, Name: p.Name, Kind: p.Kind, Timezone: p.Timezone, Latitude: p.Latitude,
		Longitude: p.Longitude, Active: p.Active}
}

func (a pointJSON) equal(b pointJSON) bool {
	eq := func(x, y *float64) bool { return (x == nil && y == nil) || (x != nil && y != nil && *x == *y) }
	return a.Code == b.Code && a.Name == b.Name && a.Kind == b.Kind && a.Timezone == b.Timezone &&
		eq(a.Latitude, b.Latitude) && eq(a.Longitude, b.Longitude) && a.Active == b.Active
}

// deviceJSON is a device's state in the audit log.
type deviceJSON struct {
	ID       string `json:"id"`
	Point    string `json:"point"`
	Provider string `json:"provider"`
	Active   bool   `json:"active"`
}

func deviceAudit(d points.Device) deviceJSON {
	return deviceJSON{ID: d.ID, Point: d.Point, Provider: d.Provider, Active: d.Active}
}

// checkIdent validates a point code or device id: 1-128 characters, no
// spaces or control characters (they travel in MQTT topics, Kafka keys, URLs).
func checkIdent(what, s string) error {
	if s == "" || len(s) > 128 || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("%w: %s %q: want 1-128 characters without spaces", ErrInvalid, what, s)
	}
	return nil
}

// normalizePoint validates p and fills the defaults of points.Store.
func normalizePoint(p points.Point) (points.Point, error) {
	if err := checkIdent("point code", p.Code); err != nil {
		return p, err
	}
	p.Name = strings.TrimSpace(p.Name)
	if p.Name == "" {
		p.Name = p.Code
	}
	if _, err := checkName(p.Name); err != nil {
		return p, err
	}
	switch p.Kind {
	case "":
		p.Kind = "well"
	case "well", "surface", "other":
	default:
		return p, fmt.Errorf("%w: kind %q: want well, surface or other", ErrInvalid, p.Kind)
	}
	if p.Timezone == "" {
		p.Timezone = "America/Santiago"
	}
	if _, err := time.LoadLocation(p.Timezone); err != nil || p.Timezone == "Local" {
		return p, fmt.Errorf("%w: timezone %q: want an IANA zone such as America/Santiago", ErrInvalid, p.Timezone)
	}
	if p.Latitude != nil && (math.IsNaN(*p.Latitude) || math.Abs(*p.Latitude) > 90) {
		return p, fmt.Errorf("%w: latitude %v: want -90 to 90", ErrInvalid, *p.Latitude)
	}
	if p.Longitude != nil && (math.IsNaN(*p.Longitude) || math.Abs(*p.Longitude) > 180) {
		return p, fmt.Errorf("%w: longitude %v: want -180 to 180", ErrInvalid, *p.Longitude)
	}
	return p, nil
}

// translate turns the points package's sentinels into this package's; what
// names the entity, e.g. `point "P-1"`.
func translate(err error, what string) error {
	switch {
	case errors.Is(err, points.ErrNotFound):
		return fmt.Errorf("%s %w", what, ErrNotFound)
	case errors.Is(err, points.ErrExists):
		return fmt.Errorf("%w: %s already exists", ErrConflict, what)
	}
	return err
}

func pointWhat(code string) string { return fmt.Sprintf("point %q", code) }
func deviceWhat(id string) string  { return fmt.Sprintf("device %q", id) }

// Point returns the point with code; the actor needs read.
func (s *Store) Point(ctx context.Context, actor Principal, code string) (points.Point, error) {
	if _, err := require(ctx, s.pool, actor, code, PermRead); err != nil {
		return points.Point{}, err
	}
	p, err := s.points.GetPoint(ctx, code)
	if errors.Is(err, points.ErrNotFound) {
		return points.Point{}, pointNotFound(code) // deleted meanwhile
	}
	return p, err
}

// Points returns the points the actor can read, ordered by code.
func (s *Store) Points(ctx context.Context, actor Principal) ([]points.Point, error) {
	if err := actor.check(); err != nil {
		return nil, err
	}
	if actor.IsAdmin() {
		return s.points.ListPoints(ctx)
	}
	codes, err := s.VisiblePoints(ctx, actor)
	if err != nil {
		return nil, err
	}
	return s.points.GetPoints(ctx, codes)
}

// CreatePoint creates a point (defaults as points.Store.UpsertPoint; note
// that the zero Point is inactive) and returns it. Only administrators
// create points; ErrConflict when the code is taken.
func (s *Store) CreatePoint(ctx context.Context, actor Principal, p points.Point) (points.Point, error) {
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if !actor.IsAdmin() {
			return nil, fmt.Errorf("%w: only administrators create points", ErrForbidden)
		}
		var err error
		if p, err = normalizePoint(p); err != nil {
			return nil, err
		}
		created, err := s.points.InTx(tx).InsertPoint(ctx, p)
		if err != nil {
			return nil, translate(err, pointWhat(p.Code))
		}
		p = created
		return &audit.Entry{Action: "point.create", EntityType: "point", EntityID: p.Code, Point: p.Code, After: pointAudit(p)}, nil
	})
	if err != nil {
		return points.Point{}, err
	}
	return p, nil
}

// UpdatePoint replaces the fields of the point p.Code with p's and returns
// it; the actor needs write.
func (s *Store) UpdatePoint(ctx context.Context, actor Principal, p points.Point) (points.Point, error) {
	return s.PatchPoint(ctx, actor, p.Code, func(q *points.Point) error {
		*q = p
		return nil
	})
}

// PatchPoint changes the point code with change and returns it; the actor
// needs write. change is applied to the point as stored, read with its row
// locked in the transaction that writes it back, so two patches of
// different fields made at once both take effect (a read outside the
// transaction would let the second write the first's fields back). An
// error from change is returned as is and nothing is written; change may
// be called again if the transaction is retried, and must not change the
// code.
func (s *Store) PatchPoint(ctx context.Context, actor Principal, code string, change func(*points.Point) error) (points.Point, error) {
	var p points.Point
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if _, err := require(ctx, tx, actor, code, PermWrite); err != nil {
			return nil, err
		}
		ptx := s.points.InTx(tx)
		before, err := ptx.PointForUpdate(ctx, code)
		if err != nil {
			return nil, translate(err, pointWhat(code))
		}
		p = before
		if err := change(&p); err != nil {
			return nil, err
		}
		if p.Code != code {
			return nil, fmt.Errorf("%w: a point's code cannot change (%q to %q)", ErrInvalid, code, p.Code)
		}
		if p, err = normalizePoint(p); err != nil {
			return nil, err
		}
		if pointAudit(before).equal(pointAudit(p)) {
			return nil, nil
		}
		if err := ptx.UpdatePoint(ctx, p); err != nil {
			return nil, translate(err, pointWhat(code))
		}
		return &audit.Entry{Action: "point.update", EntityType: "point", EntityID: code, Point: code,
			Before: pointAudit(before), After: pointAudit(p)}, nil
	})
	if err != nil {
		return points.Point{}, err
	}
	return p, nil
}

// DeletePoint deletes the point with code, with its owners and notification
// preferences (its readings stay). Only administrators may (users who can
// see it get ErrForbidden); a point with devices is ErrConflict: remove or
// move them first.
func (s *Store) DeletePoint(ctx context.Context, actor Principal, code string) error {
	return s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if _, err := accessTo(ctx, tx, actor, code); err != nil {
			return nil, err
		}
		if !actor.IsAdmin() {
			return nil, fmt.Errorf("%w: only administrators delete points", ErrForbidden)
		}
		ptx := s.points.InTx(tx)
		before, err := ptx.PointForUpdate(ctx, code)
		if err != nil {
			return nil, translate(err, pointWhat(code))
		}
		devs, err := ptx.DevicesOf(ctx, code)
		if err != nil {
			return nil, err
		}
		if len(devs) > 0 {
			return nil, fmt.Errorf("%w: point %q still has %d device(s)", ErrConflict, code, len(devs))
		}
		if err := ptx.DeletePoint(ctx, code); err != nil {
			if pgCode(err) == codeForeignKeyViolation {
				return nil, fmt.Errorf("%w: point %q got a device meanwhile", ErrConflict, code)
			}
			return nil, translate(err, pointWhat(code))
		}
		return &audit.Entry{Action: "point.delete", EntityType: "point", EntityID: code, Point: code, Before: pointAudit(before)}, nil
	})
}

// Devices returns the devices of point, ordered by id; the actor needs read.
func (s *Store) Devices(ctx context.Context, actor Principal, point string) ([]points.Device, error) {
	if _, err := require(ctx, s.pool, actor, point, PermRead); err != nil {
		return nil, err
	}
	return s.points.DevicesOf(ctx, point)
}

// AddDevice creates a device on d.Point and returns it; the actor needs
// manage_devices on that point. ErrConflict when the id is taken, by a
// device of any point (which point is not said).
func (s *Store) AddDevice(ctx context.Context, actor Principal, d points.Device) (points.Device, error) {
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if err := checkIdent("device id", d.ID); err != nil {
			return nil, err
		}
		if err := checkIdent("point code", d.Point); err != nil {
			return nil, err
		}
		if _, err := require(ctx, tx, actor, d.Point, PermManageDevices); err != nil {
			return nil, err
		}
		d.Provider = strings.TrimSpace(d.Provider)
		if err := s.points.InTx(tx).InsertDevice(ctx, d); err != nil {
			return nil, translate(err, deviceWhat(d.ID))
		}
		return &audit.Entry{Action: "device.create", EntityType: "device", EntityID: d.ID, Point: d.Point, After: deviceAudit(d)}, nil
	})
	if err != nil {
		return points.Device{}, err
	}
	return d, nil
}

// deviceForUpdate locks and returns the device with id if the actor holds
// perm on its point. A device of a point the actor cannot read is
// ErrNotFound, as if it did not exist.
func (s *Store) deviceForUpdate(ctx context.Context, tx pgx.Tx, actor Principal, id string, perm Permission) (points.Device, error) {
	d, err := s.points.InTx(tx).DeviceForUpdate(ctx, id)
	if err != nil {
		return points.Device{}, translate(err, deviceWhat(id))
	}
	if _, err := require(ctx, tx, actor, d.Point, perm); err != nil {
		if errors.Is(err, ErrNotFound) {
			return points.Device{}, fmt.Errorf("%s %w", deviceWhat(id), ErrNotFound)
		}
		return points.Device{}, err
	}
	return d, nil
}

// UpdateDevice replaces the device d.ID's point, provider and active flag
// with d's and returns it. The actor needs manage_devices on its current
// point and, when it moves, on the new one.
func (s *Store) UpdateDevice(ctx context.Context, actor Principal, d points.Device) (points.Device, error) {
	return s.PatchDevice(ctx, actor, d.ID, func(e *points.Device) error {
		*e = d
		return nil
	})
}

// PatchDevice changes the device id with change and returns it. The actor
// needs manage_devices on its current point and, when it moves, on the new
// one. change is applied to the device as stored, with its row locked, as
// in PatchPoint; it must not change the id.
func (s *Store) PatchDevice(ctx context.Context, actor Principal, id string, change func(*points.Device) error) (points.Device, error) {
	var d points.Device
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		before, err := s.deviceForUpdate(ctx, tx, actor, id, PermManageDevices)
		if err != nil {
			return nil, err
		}
		d = before
		if err := change(&d); err != nil {
			return nil, err
		}
		if d.ID != id {
			return nil, fmt.Errorf("%w: a device's id cannot change (%q to %q)", ErrInvalid, id, d.ID)
		}
		if d.Point != before.Point {
			if _, err := require(ctx, tx, actor, d.Point, PermManageDevices); err != nil {
				return nil, err
			}
		}
		d.Provider = strings.TrimSpace(d.Provider)
		if deviceAudit(before) == deviceAudit(d) {
			return nil, nil
		}
		if err := s.points.InTx(tx).UpdateDevice(ctx, d); err != nil {
			return nil, translate(err, deviceWhat(id))
		}
		return &audit.Entry{Action: "device.update", EntityType: "device", EntityID: id, Point: d.Point,
			Before: deviceAudit(before), After: deviceAudit(d)}, nil
	})
	if err != nil {
		return points.Device{}, err
	}
	return d, nil
}

// RemoveDevice deletes the device with id; the actor needs manage_devices
// on its point. Its readings stay.
func (s *Store) RemoveDevice(ctx context.Context, actor Principal, id string) error {
	return s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		before, err := s.deviceForUpdate(ctx, tx, actor, id, PermManageDevices)
		if err != nil {
			return nil, err
		}
		if err := s.points.InTx(tx).DeleteDevice(ctx, id); err != nil {
			return nil, translate(err, deviceWhat(id))
		}
		return &audit.Entry{Action: "device.delete", EntityType: "device", EntityID: id, Point: before.Point,
			Before: deviceAudit(before)}, nil
	})
}

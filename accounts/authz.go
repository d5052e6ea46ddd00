package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// access is what a principal may do on one point.
type access struct {
	admin    bool
	relation Relation // empty for administrators
	perms    []Permission
}

func (a access) has(p Permission) bool { return a.admin || slices.Contains(a.perms, p) }

// pointNotFound is the one error for a point that does not exist and for
// one the principal may not see: the two must be indistinguishable.
func pointNotFound(point string) error { return fmt.Errorf("point %q %w", point, ErrNotFound) }

// accessTo returns what p may do on point, or ErrNotFound when p cannot read
// it (whether or not it exists).
func accessTo(ctx context.Context, q querier, p Principal, point string) (access, error) {
	if err := p.check(); err != nil {
		return access{}, err
	}
	if p.IsAdmin() {
		var exists bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM catchment_points WHERE code = $1)`, point).Scan(&exists); err != nil {
			return access{}, fmt.Errorf("reading point %s: %w", point, err)
		}
		if !exists {
			return access{}, pointNotFound(point)
		}
		return access{admin: true, perms: AllPermissions()}, nil
	}
	var a access
	var perms []string
	err := q.QueryRow(ctx, `SELECT relation, permissions FROM point_owners WHERE point = $1 AND user_id = $2`,
		point, p.userID).Scan(&a.relation, &perms)
	if errors.Is(err, pgx.ErrNoRows) {
		return access{}, pointNotFound(point)
	}
	if err != nil {
		return access{}, fmt.Errorf("reading access to point %s: %w", point, err)
	}
	a.perms = toPermissions(perms)
	if !a.has(PermRead) {
		return access{}, pointNotFound(point)
	}
	return a, nil
}

// require returns p's access to point when it includes perm; ErrNotFound
// when p cannot read the point, ErrForbidden when it can but lacks perm.
func require(ctx context.Context, q querier, p Principal, point string, perm Permission) (access, error) {
	a, err := accessTo(ctx, q, p, point)
	if err != nil {
		return access{}, err
	}
	if !a.has(perm) {
		return access{}, fmt.Errorf("%w: %s on point %q is not granted", ErrForbidden, perm, point)
	}
	return a, nil
}

// Can returns nil when p holds perm on point; ErrNotFound when p cannot
// even read the point (or it does not exist), ErrForbidden when p can read
// it but lacks perm. Administrators hold every permission on every point.
func (s *Store) Can(ctx context.Context, p Principal, point string, perm Permission) error {
	if !slices.Contains(allPermissions, perm) {
		return fmt.Errorf("%w: permission %q", ErrInvalid, perm)
	}
	_, err := require(ctx, s.pool, p, point, perm)
	return err
}

// Permissions returns what p may do on point, in canonical order
// (ErrNotFound when p cannot read it).
func (s *Store) Permissions(ctx context.Context, p Principal, point string) ([]Permission, error) {
	a, err := accessTo(ctx, s.pool, p, point)
	if err != nil {
		return nil, err
	}
	return slices.Clone(a.perms), nil
}

// VisiblePoints returns the codes of the points p can read, ordered: every
// point for administrators, the granted ones for users.
func (s *Store) VisiblePoints(ctx context.Context, p Principal) ([]string, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	var rows pgx.Rows
	var err error
	if p.IsAdmin() {
		rows, err = s.pool.Query(ctx, `SELECT code FROM catchment_points ORDER BY code`)
	} else {
		rows, err = s.pool.Query(ctx, `SELECT point FROM point_owners WHERE user_id = $1 AND 'read' = ANY (permissions)
			ORDER BY point`, p.userID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading visible points: %w", err)
	}
	codes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading visible points: %w", err)
	}
	return codes, nil
}

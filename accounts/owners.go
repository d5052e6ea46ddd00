package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/audit"
)

// Owner is one user's relation to a point.
type Owner struct {
	Point       string
	UserID      int64
	Email       string
	Name        string
	Relation    Relation
	Permissions []Permission
	GrantedBy   int64 // 0: granted by the system or the command line
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// ownerJSON is a grant's state in the audit log.
type ownerJSON struct {
	Point       string       `json:"point"`
	UserID      int64        `json:"user_id"`
	Relation    Relation     `json:"relation"`
	Permissions []Permission `json:"permissions"`
	GrantedBy   int64        `json:"granted_by,omitempty"`
	// Notifications are the preferences a revocation removed with the grant.
	Notifications *notificationsJSON `json:"notifications,omitempty"`
}

func (o Owner) audit() ownerJSON {
	return ownerJSON{Point: o.Point, UserID: o.UserID, Relation: o.Relation, Permissions: o.Permissions, GrantedBy: o.GrantedBy}
}

func ownerID(point string, userID int64) string { return point + "/" + strconv.FormatInt(userID, 10) }

const ownerColumns = `o.point, o.user_id, u.email, u.name, o.relation, o.permissions, coalesce(o.granted_by, 0), o.created_at, o.updated_at`

func scanOwner(r pgx.Row) (Owner, error) {
	var o Owner
	var perms []string
	err := r.Scan(&o.Point, &o.UserID, &o.Email, &o.Name, &o.Relation, &perms, &o.GrantedBy, &o.CreatedAt, &o.UpdatedAt)
	o.Permissions = toPermissions(perms)
	return o, err
}

func getOwner(ctx context.Context, q querier, point string, userID int64, lock string) (Owner, error) {
	o, err := scanOwner(q.QueryRow(ctx, `SELECT `+ownerColumns+` FROM point_owners o JOIN users u ON u.id = o.user_id
		WHERE o.point = $1 AND o.user_id = $2 `+lock, point, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Owner{}, fmt.Errorf("user %d has no relation to point %q: %w", userID, point, ErrNotFound)
	}
	if err != nil {
		return Owner{}, fmt.Errorf("reading the relation of user %d to point %s: %w", userID, point, err)
	}
	return o, nil
}

// grantPermissions returns the permissions a grant of rel with perms
// carries: the relation's defaults when perms is empty, else perms plus read.
func grantPermissions(rel Relation, perms []Permission) (Relation, []Permission, error) {
	rel, err := ParseRelation(string(rel))
	if err != nil {
		return "", nil, err
	}
	if len(perms) == 0 {
		return rel, DefaultPermissions(rel), nil
	}
	perms, err = normalizePermissions(perms)
	return rel, perms, err
}

// mayManage checks that a, the actor's access to a point, allows granting,
// changing or revoking a relation rel with perms: administrators may do
// anything; users need manage_owners, may hand out only permissions they
// hold, and only a PRIMARY may touch a PRIMARY relation.
func mayManage(a access, point string, rel Relation, perms []Permission) error {
	if a.admin {
		return nil
	}
	if !subset(perms, a.perms) {
		return fmt.Errorf("%w: cannot grant or remove permissions you do not hold on point %q", ErrForbidden, point)
	}
	if rel == RelationPrimary && a.relation != RelationPrimary {
		return fmt.Errorf("%w: only a PRIMARY owner or an administrator manages PRIMARY relations on point %q", ErrForbidden, point)
	}
	return nil
}

// Grant relates the user to point as rel with perms (nil: the relation's
// defaults; read is always included) and returns the grant. The actor needs
// manage_owners on the point (see mayManage). ErrConflict when the user
// already has a relation to the point (UpdateGrant changes it).
func (s *Store) Grant(ctx context.Context, actor Principal, point string, userID int64, rel Relation, perms []Permission) (Owner, error) {
	var o Owner
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		rel, perms, err := grantPermissions(rel, perms)
		if err != nil {
			return nil, err
		}
		a, err := require(ctx, tx, actor, point, PermManageOwners)
		if err != nil {
			return nil, err
		}
		if err := mayManage(a, point, rel, perms); err != nil {
			return nil, err
		}
		if _, err := getUser(ctx, tx, userID, "FOR KEY SHARE"); err != nil {
			return nil, err
		}
		var grantedBy *int64
		if actor.userID != 0 {
			grantedBy = &actor.userID
		}
		_, err = tx.Exec(ctx, `INSERT INTO point_owners (point, user_id, relation, permissions, granted_by)
			VALUES ($1, $2, $3, $4, $5)`, point, userID, rel, stringsOf(perms), grantedBy)
		switch pgCode(err) {
		case "":
		case codeUniqueViolation:
			return nil, fmt.Errorf("%w: user %d already has a relation to point %q", ErrConflict, userID, point)
		case codeForeignKeyViolation: // deleted meanwhile
			return nil, fmt.Errorf("granting point %s to user %d: %w", point, userID, ErrNotFound)
		default:
			return nil, fmt.Errorf("granting point %s to user %d: %w", point, userID, err)
		}
		if o, err = getOwner(ctx, tx, point, userID, ""); err != nil {
			return nil, err
		}
		return &audit.Entry{Action: "owner.grant", EntityType: "point_owner", EntityID: ownerID(point, userID), Point: point,
			After: o.audit()}, nil
	})
	return o, err
}

// UpdateGrant changes the user's existing relation to point to rel with
// perms (nil: the relation's defaults) and returns it. The actor needs
// manage_owners and must be allowed to manage both the old and the new
// grant (see mayManage).
func (s *Store) UpdateGrant(ctx context.Context, actor Principal, point string, userID int64, rel Relation, perms []Permission) (Owner, error) {
	var o Owner
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		rel, perms, err := grantPermissions(rel, perms)
		if err != nil {
			return nil, err
		}
		a, err := require(ctx, tx, actor, point, PermManageOwners)
		if err != nil {
			return nil, err
		}
		before, err := getOwner(ctx, tx, point, userID, "FOR UPDATE OF o")
		if err != nil {
			return nil, err
		}
		if err := mayManage(a, point, before.Relation, before.Permissions); err != nil {
			return nil, err
		}
		if err := mayManage(a, point, rel, perms); err != nil {
			return nil, err
		}
		o = before
		if rel == before.Relation && slices.Equal(perms, before.Permissions) {
			return nil, nil
		}
		if _, err := tx.Exec(ctx, `UPDATE point_owners SET relation = $3, permissions = $4, updated_at = now()
			WHERE point = $1 AND user_id = $2`, point, userID, rel, stringsOf(perms)); err != nil {
			return nil, fmt.Errorf("changing the relation of user %d to point %s: %w", userID, point, err)
		}
		if o, err = getOwner(ctx, tx, point, userID, ""); err != nil {
			return nil, err
		}
		return &audit.Entry{Action: "owner.update", EntityType: "point_owner", EntityID: ownerID(point, userID), Point: point,
			Before: before.audit(), After: o.audit()}, nil
	})
	return o, err
}

// Revoke removes the user's relation to point, and with it their
// notification preferences for the point. Users may always give up their
// own relation; otherwise the actor needs manage_owners (see mayManage).
func (s *Store) Revoke(ctx context.Context, actor Principal, point string, userID int64) error {
	return s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		perm := PermManageOwners
		if actor.is(userID) {
			perm = PermRead
		}
		a, err := require(ctx, tx, actor, point, perm)
		if err != nil {
			return nil, err
		}
		before, err := getOwner(ctx, tx, point, userID, "FOR UPDATE OF o")
		if err != nil {
			return nil, err
		}
		if !actor.is(userID) {
			if err := mayManage(a, point, before.Relation, before.Permissions); err != nil {
				return nil, err
			}
		}
		b := before.audit()
		prefs, err := getNotifications(ctx, tx, point, userID)
		switch {
		case err == nil:
			b.Notifications = new(prefs.audit())
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM point_owners WHERE point = $1 AND user_id = $2`, point, userID); err != nil {
			return nil, fmt.Errorf("revoking point %s from user %d: %w", point, userID, err)
		}
		return &audit.Entry{Action: "owner.revoke", EntityType: "point_owner", EntityID: ownerID(point, userID), Point: point,
			Before: b}, nil
	})
}

// Owners returns the users related to point, ordered by relation (PRIMARY,
// ADMINISTRATOR, SECONDARY) then email. The actor needs read.
func (s *Store) Owners(ctx context.Context, actor Principal, point string) ([]Owner, error) {
	if _, err := require(ctx, s.pool, actor, point, PermRead); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+ownerColumns+` FROM point_owners o JOIN users u ON u.id = o.user_id
		WHERE o.point = $1
		ORDER BY array_position(ARRAY['PRIMARY', 'ADMINISTRATOR', 'SECONDARY'], o.relation), lower(u.email)`, point)
	if err != nil {
		return nil, fmt.Errorf("reading owners of point %s: %w", point, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Owner, error) { return scanOwner(r) })
	if err != nil {
		return nil, fmt.Errorf("reading owners of point %s: %w", point, err)
	}
	return out, nil
}

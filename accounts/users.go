package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/audit"
)

// User is a person or service account.
type User struct {
	ID        int64
	Email     string
	Name      string
	Role      Role
	Active    bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// userJSON is a user's state in the audit log.
type userJSON struct {
	ID     int64  `json:"id"`
	Email  string `json:"email"`
	Name   string `json:"name"`
	Role   Role   `json:"role"`
	Active bool   `json:"active"`
}

func (u User) audit() userJSON {
	return userJSON{ID: u.ID, Email: u.Email, Name: u.Name, Role: u.Role, Active: u.Active}
}

// NewUser is what CreateUser needs. Role defaults to RoleUser.
type NewUser struct {
	Email string
	Name  string
	Role  Role
}

// UserChanges are the fields UpdateUser changes; nil fields stay.
type UserChanges struct {
	Email  *string
	Name   *string
	Role   *Role
	Active *bool
}

const userColumns = `id, email, name, role, active, created_at, updated_at`

func scanUser(r pgx.Row) (User, error) {
	var u User
	err := r.Scan(&u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.CreatedAt, &u.UpdatedAt)
	return u, err
}

// checkEmail returns email trimmed, or ErrInvalid. Emails are compared
// case-insensitively but stored as given.
func checkEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || len(email) > 254 {
		return "", fmt.Errorf("%w: email %q is not an address like name@example.com", ErrInvalid, email)
	}
	return email, nil
}

func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if len(name) > 200 || strings.ContainsFunc(name, isControl) {
		return "", fmt.Errorf("%w: name must be at most 200 printable characters", ErrInvalid)
	}
	return name, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// CreateUser creates a user. Only administrators may; ErrConflict when the
// email is taken (in any case).
func (s *Store) CreateUser(ctx context.Context, actor Principal, nu NewUser) (User, error) {
	var u User
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if !actor.IsAdmin() {
			return nil, fmt.Errorf("%w: only administrators create users", ErrForbidden)
		}
		email, err := checkEmail(nu.Email)
		if err != nil {
			return nil, err
		}
		name, err := checkName(nu.Name)
		if err != nil {
			return nil, err
		}
		role := nu.Role
		if role == "" {
			role = RoleUser
		}
		if role, err = ParseRole(string(role)); err != nil {
			return nil, err
		}
		u, err = scanUser(tx.QueryRow(ctx, `INSERT INTO users (email, name, role) VALUES ($1, $2, $3)
			ON CONFLICT ((lower(email))) DO NOTHING RETURNING `+userColumns, email, name, role))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("%w: a user with email %q exists", ErrConflict, email)
		}
		if err != nil {
			return nil, fmt.Errorf("creating user %s: %w", email, err)
		}
		return &audit.Entry{Action: "user.create", EntityType: "user", EntityID: strconv.FormatInt(u.ID, 10), After: u.audit()}, nil
	})
	return u, err
}

// User returns the user with id. Administrators see everyone, users only
// themselves (anyone else is ErrNotFound).
func (s *Store) User(ctx context.Context, actor Principal, id int64) (User, error) {
	if err := actor.check(); err != nil {
		return User{}, err
	}
	if !actor.IsAdmin() && !actor.is(id) {
		return User{}, fmt.Errorf("user %d %w", id, ErrNotFound)
	}
	return getUser(ctx, s.pool, id, "")
}

// UserByEmail returns the user with email, in any case. Administrators see
// everyone, users only themselves.
func (s *Store) UserByEmail(ctx context.Context, actor Principal, email string) (User, error) {
	if err := actor.check(); err != nil {
		return User{}, err
	}
	email = strings.TrimSpace(email)
	if !actor.IsAdmin() && !strings.EqualFold(actor.email, email) {
		return User{}, fmt.Errorf("user %q %w", email, ErrNotFound)
	}
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE lower(email) = lower($1)`, email))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, fmt.Errorf("user %q %w", email, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("reading user %s: %w", email, err)
	}
	return u, nil
}

// Users returns every user, ordered by id. Only administrators may.
func (s *Store) Users(ctx context.Context, actor Principal) ([]User, error) {
	if err := actor.check(); err != nil {
		return nil, err
	}
	if !actor.IsAdmin() {
		return nil, fmt.Errorf("%w: only administrators list users", ErrForbidden)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM users ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (User, error) { return scanUser(r) })
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	return out, nil
}

func getUser(ctx context.Context, q querier, id int64, lock string) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1 `+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, fmt.Errorf("user %d %w", id, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("reading user %d: %w", id, err)
	}
	return u, nil
}

// UpdateUser applies ch to the user with id and returns the result.
// Administrators change anything; users change their own email and name
// only (role or active: ErrForbidden; anyone else: ErrNotFound). Removing
// the last active administrator (demoting or deactivating them) is
// ErrConflict.
func (s *Store) UpdateUser(ctx context.Context, actor Principal, id int64, ch UserChanges) (User, error) {
	var after User
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if !actor.IsAdmin() {
			if !actor.is(id) {
				return nil, fmt.Errorf("user %d %w", id, ErrNotFound)
			}
			if ch.Role != nil || ch.Active != nil {
				return nil, fmt.Errorf("%w: only administrators change roles and deactivate users", ErrForbidden)
			}
		}
		var admins []int64
		if ch.Role != nil || ch.Active != nil {
			var err error
			if admins, err = lockAdmins(ctx, tx); err != nil {
				return nil, err
			}
		}
		before, err := getUser(ctx, tx, id, "FOR UPDATE")
		if err != nil {
			return nil, err
		}
		after = before
		if ch.Email != nil {
			if after.Email, err = checkEmail(*ch.Email); err != nil {
				return nil, err
			}
		}
		if ch.Name != nil {
			if after.Name, err = checkName(*ch.Name); err != nil {
				return nil, err
			}
		}
		if ch.Role != nil {
			if after.Role, err = ParseRole(string(*ch.Role)); err != nil {
				return nil, err
			}
		}
		if ch.Active != nil {
			after.Active = *ch.Active
		}
		if after.audit() == before.audit() {
			return nil, nil
		}
		if isActiveAdmin(before) && !isActiveAdmin(after) {
			if err := keepAnAdmin(admins, id); err != nil {
				return nil, err
			}
		}
		after, err = scanUser(tx.QueryRow(ctx, `UPDATE users SET email = $2, name = $3, role = $4, active = $5, updated_at = now()
			WHERE id = $1 RETURNING `+userColumns, id, after.Email, after.Name, after.Role, after.Active))
		if pgCode(err) == codeUniqueViolation {
			return nil, fmt.Errorf("%w: a user with email %q exists", ErrConflict, after.Email)
		}
		if err != nil {
			return nil, fmt.Errorf("updating user %d: %w", id, err)
		}
		return &audit.Entry{Action: "user.update", EntityType: "user", EntityID: strconv.FormatInt(id, 10),
			Before: before.audit(), After: after.audit()}, nil
	})
	return after, err
}

// DeleteUser deletes the user with id, their tokens, grants and notification
// preferences. Only administrators may; deleting the last active
// administrator is ErrConflict. Deactivating (UpdateUser) keeps the history
// readable and is usually what is wanted.
func (s *Store) DeleteUser(ctx context.Context, actor Principal, id int64) error {
	return s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if !actor.IsAdmin() {
			if !actor.is(id) {
				return nil, fmt.Errorf("user %d %w", id, ErrNotFound)
			}
			return nil, fmt.Errorf("%w: only administrators delete users", ErrForbidden)
		}
		admins, err := lockAdmins(ctx, tx)
		if err != nil {
			return nil, err
		}
		before, err := getUser(ctx, tx, id, "FOR UPDATE")
		if err != nil {
			return nil, err
		}
		if isActiveAdmin(before) {
			if err := keepAnAdmin(admins, id); err != nil {
				return nil, err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM users WHERE id = $1`, id); err != nil {
			return nil, fmt.Errorf("deleting user %d: %w", id, err)
		}
		return &audit.Entry{Action: "user.delete", EntityType: "user", EntityID: strconv.FormatInt(id, 10), Before: before.audit()}, nil
	})
}

func isActiveAdmin(u User) bool { return u.Role == RoleAdmin && u.Active }

// lockAdmins locks the active administrators' rows, always in id order, and
// returns their ids: two transactions cannot then each remove one of the
// last two administrators, nor deadlock trying.
func lockAdmins(ctx context.Context, tx pgx.Tx) ([]int64, error) {
	rows, err := tx.Query(ctx, `SELECT id FROM users WHERE role = 'admin' AND active ORDER BY id FOR UPDATE`)
	if err != nil {
		return nil, fmt.Errorf("locking administrators: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("locking administrators: %w", err)
	}
	return ids, nil
}

// keepAnAdmin returns ErrConflict unless admins holds an id other than id.
func keepAnAdmin(admins []int64, id int64) error {
	for _, other := range admins {
		if other != id {
			return nil
		}
	}
	return fmt.Errorf("%w: user %d is the last active administrator", ErrConflict, id)
}

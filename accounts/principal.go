package accounts

import (
	"fmt"
	"strings"
)

// Role is a user's global role.
type Role string

// Roles.
const (
	// RoleAdmin sees and changes everything.
	RoleAdmin Role = "admin"
	// RoleUser sees and changes only the points granted to them.
	RoleUser Role = "user"
)

// ParseRole returns the role named s ("admin" or "user").
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleAdmin, RoleUser:
		return r, nil
	}
	return "", fmt.Errorf("%w: role %q: want admin or user", ErrInvalid, s)
}

// A Principal is who acts: a user authenticated by a token, or the system.
// Its fields are unexported so that only Authenticate and System make one;
// the zero Principal is refused everywhere with ErrUnauthenticated.
type Principal struct {
	userID  int64
	email   string
	name    string
	role    Role
	tokenID int64
	actor   string
}

// System returns the principal of the system itself, named name for the
// audit log (e.g. "cli:root", "system:import"). It acts as an administrator
// and has no user id: its audit rows have actor_user_id NULL.
func System(name string) Principal {
	if name == "" {
		name = "system"
	}
	return Principal{role: RoleAdmin, actor: name}
}

// UserID is the user's id; 0 for the system.
func (p Principal) UserID() int64 { return p.userID }

// Email is the user's email; empty for the system.
func (p Principal) Email() string { return p.email }

// Name is the user's name; empty for the system.
func (p Principal) Name() string { return p.name }

// Role is the principal's role; the system is RoleAdmin.
func (p Principal) Role() Role { return p.role }

// TokenID is the id of the token that authenticated the user; 0 for the
// system.
func (p Principal) TokenID() int64 { return p.tokenID }

// IsAdmin reports whether the principal may do everything.
func (p Principal) IsAdmin() bool { return p.role == RoleAdmin && p.actor != "" }

// IsSystem reports whether the principal is the system, not a user.
func (p Principal) IsSystem() bool { return p.userID == 0 && p.actor != "" }

// Actor names the principal in the audit log: "user:<email>" or the
// system's name.
func (p Principal) Actor() string { return p.actor }

// String returns Actor.
func (p Principal) String() string { return p.actor }

func (p Principal) check() error {
	if p.actor == "" {
		return fmt.Errorf("%w: no principal", ErrUnauthenticated)
	}
	return nil
}

// is reports whether the principal is the user with id.
func (p Principal) is(id int64) bool { return p.userID != 0 && p.userID == id }

func userPrincipal(u User, tokenID int64) Principal {
	return Principal{userID: u.ID, email: u.Email, name: u.Name, role: u.Role, tokenID: tokenID, actor: "user:" + u.Email}
}

package accounts

import (
	"fmt"
	"slices"
	"strings"
)

// Permission is one thing a user may do on a point.
type Permission string

// Permissions, in their canonical order.
const (
	// PermRead: see the point, its data, devices, owners and compliance.
	PermRead Permission = "read"
	// PermWrite: change the point's own fields; ingest data for it.
	PermWrite Permission = "write"
	// PermManageDevices: add, move and remove the point's devices.
	PermManageDevices Permission = "manage_devices"
	// PermManageOwners: grant, change and revoke other users' relations.
	PermManageOwners Permission = "manage_owners"
	// PermManageCompliance: configure compliance sources, resubmit.
	PermManageCompliance Permission = "manage_compliance"
	// PermManageNotifications: set other users' notification preferences
	// (everyone may set their own on the points they can read).
	PermManageNotifications Permission = "manage_notifications"
)

var allPermissions = []Permission{PermRead, PermWrite, PermManageDevices, PermManageOwners, PermManageCompliance, PermManageNotifications}

// AllPermissions returns every permission in canonical order.
func AllPermissions() []Permission { return slices.Clone(allPermissions) }

// Relation is how a user is related to a point.
type Relation string

// Relations.
const (
	// RelationPrimary is the point's owner of record: every permission.
	RelationPrimary Relation = "PRIMARY"
	// RelationSecondary is a co-owner or stakeholder kept informed: read.
	RelationSecondary Relation = "SECONDARY"
	// RelationAdministrator operates the point for its owner: everything
	// but managing owners.
	RelationAdministrator Relation = "ADMINISTRATOR"
)

// DefaultPermissions returns the permissions a relation carries when a grant
// names none. The database function stackvps_default_point_permissions
// holds the same table for rows inserted by hand.
//
//	PRIMARY        read write manage_devices manage_owners manage_compliance manage_notifications
//	ADMINISTRATOR  read write manage_devices               manage_compliance manage_notifications
//	SECONDARY      read
func DefaultPermissions(r Relation) []Permission {
	switch r {
	case RelationPrimary:
		return AllPermissions()
	case RelationAdministrator:
		return []Permission{PermRead, PermWrite, PermManageDevices, PermManageCompliance, PermManageNotifications}
	case RelationSecondary:
		return []Permission{PermRead}
	}
	return nil
}

// ParseRelation returns the relation named s, in any case.
func ParseRelation(s string) (Relation, error) {
	switch r := Relation(strings.ToUpper(strings.TrimSpace(s))); r {
	case RelationPrimary, RelationSecondary, RelationAdministrator:
		return r, nil
	}
	return "", fmt.Errorf("%w: relation %q: want PRIMARY, SECONDARY or ADMINISTRATOR", ErrInvalid, s)
}

// ParsePermissions parses a comma-separated list such as "read,write".
func ParsePermissions(s string) ([]Permission, error) {
	var out []Permission
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		out = append(out, Permission(strings.ToLower(f)))
	}
	return normalizePermissions(out)
}

// normalizePermissions checks every permission, adds read (a grant without it
// would be invisible) and returns them deduplicated in canonical order.
func normalizePermissions(perms []Permission) ([]Permission, error) {
	for _, p := range perms {
		if !slices.Contains(allPermissions, p) {
			return nil, fmt.Errorf("%w: permission %q: want some of %s", ErrInvalid, p, joinPermissions(allPermissions))
		}
	}
	out := []Permission{PermRead}
	for _, p := range allPermissions[1:] {
		if slices.Contains(perms, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func joinPermissions(ps []Permission) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

func toPermissions(ss []string) []Permission {
	out := make([]Permission, len(ss))
	for i, s := range ss {
		out[i] = Permission(s)
	}
	return out
}

// subset reports whether every permission of a is in b.
func subset(a, b []Permission) bool {
	for _, p := range a {
		if !slices.Contains(b, p) {
			return false
		}
	}
	return true
}

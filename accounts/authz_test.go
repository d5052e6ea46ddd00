package accounts_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/points"
)

func TestPermissionTables(t *testing.T) {
	all := accounts.AllPermissions()
	require.Equal(t, all, accounts.DefaultPermissions(accounts.RelationPrimary))
	for _, r := range []accounts.Relation{accounts.RelationPrimary, accounts.RelationAdministrator, accounts.RelationSecondary} {
		require.Contains(t, accounts.DefaultPermissions(r), accounts.PermRead, "%s can read", r)
	}
	require.NotContains(t, accounts.DefaultPermissions(accounts.RelationAdministrator), accounts.PermManageOwners)
	require.Equal(t, []accounts.Permission{accounts.PermRead}, accounts.DefaultPermissions(accounts.RelationSecondary))

	cases := []struct {
		in   string
		want []accounts.Permission
		err  string
	}{
		{"", []accounts.Permission{"read"}, ""},
		{"write", []accounts.Permission{"read", "write"}, ""},
		{"manage_owners, READ ,write,write", []accounts.Permission{"read", "write", "manage_owners"}, ""},
		{"read,admin", nil, `permission "admin"`},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := accounts.ParsePermissions(c.in)
			if c.err != "" {
				require.ErrorIs(t, err, accounts.ErrInvalid)
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
	r, err := accounts.ParseRelation("administrator")
	require.NoError(t, err)
	require.Equal(t, accounts.RelationAdministrator, r)
	_, err = accounts.ParseRelation("OWNER")
	require.ErrorIs(t, err, accounts.ErrInvalid)
}

// TestDefaultPermissionsMatchDatabaseIntegration keeps the Go table and the
// SQL function (used for rows inserted by hand) the same.
func TestDefaultPermissionsMatchDatabaseIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, r := range []accounts.Relation{accounts.RelationPrimary, accounts.RelationAdministrator, accounts.RelationSecondary} {
		var got []string
		require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT stackvps_default_point_permissions($1)`, string(r)).Scan(&got))
		want := accounts.DefaultPermissions(r)
		require.Len(t, got, len(want), "%s", r)
		for i := range want {
			require.Equal(t, string(want[i]), got[i], "%s", r)
		}
	}
	f.point("P1")
	u := f.user("sql@example.cl", accounts.RoleUser)
	_, err := f.pool.Exec(f.ctx, `INSERT INTO point_owners (point, user_id, relation) VALUES ('P1', $1, 'ADMINISTRATOR')`, u.ID)
	require.NoError(t, err)
	perms, err := f.store.Permissions(f.ctx, f.login(u), "P1")
	require.NoError(t, err)
	require.Equal(t, accounts.DefaultPermissions(accounts.RelationAdministrator), perms)
	_, err = f.pool.Exec(f.ctx, `UPDATE point_owners SET permissions = '{write}' WHERE user_id = $1`, u.ID)
	require.ErrorContains(t, err, "check constraint", "read cannot be taken away")
}

type outcome int

const (
	ok outcome = iota
	forbidden
	notFound
)

func (o outcome) String() string { return [...]string{"ok", "forbidden", "not found"}[o] }

func requireOutcome(t *testing.T, want outcome, err error, msg string) {
	t.Helper()
	switch want {
	case ok:
		require.NoError(t, err, msg)
	case forbidden:
		require.ErrorIs(t, err, accounts.ErrForbidden, msg)
		require.NotErrorIs(t, err, accounts.ErrNotFound, msg)
	case notFound:
		require.ErrorIs(t, err, accounts.ErrNotFound, msg)
		require.NotErrorIs(t, err, accounts.ErrForbidden, msg+": a point one may not see must not be forbidden, but absent")
	}
}

// TestAuthorizationMatrixIntegration checks every principal kind against
// every permission on its own point, a foreign point and a missing one, via
// Can and via the operations each permission guards.
func TestAuthorizationMatrixIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.point("OWN")
	f.point("FOREIGN")
	users := map[string]accounts.User{}
	for _, name := range []string{"admin", "primary", "administrator", "secondary", "stranger", "other", "target"} {
		role := accounts.RoleUser
		if name == "admin" {
			role = accounts.RoleAdmin
		}
		users[name] = f.user(name+"@example.cl", role)
	}
	f.grant("OWN", users["primary"], accounts.RelationPrimary)
	f.grant("OWN", users["administrator"], accounts.RelationAdministrator)
	f.grant("OWN", users["secondary"], accounts.RelationSecondary)
	f.grant("FOREIGN", users["other"], accounts.RelationPrimary)
	f.grant("OWN", users["target"], accounts.RelationSecondary)
	f.grant("FOREIGN", users["target"], accounts.RelationSecondary)
	_, err := f.store.AddDevice(f.ctx, root, points.Device{ID: "dev-own", Point: "OWN", Active: true})
	require.NoError(t, err)
	_, err = f.store.AddDevice(f.ctx, root, points.Device{ID: "dev-foreign", Point: "FOREIGN", Active: true})
	require.NoError(t, err)

	principals := map[string]accounts.Principal{}
	for name, u := range users {
		principals[name] = f.login(u)
	}

	// want[principal][permission] on OWN; FOREIGN and MISSING are derived.
	all := accounts.AllPermissions()
	want := map[string]map[accounts.Permission]outcome{}
	for name := range principals {
		want[name] = map[accounts.Permission]outcome{}
		for _, p := range all {
			switch {
			case name == "admin":
				want[name][p] = ok
			case name == "primary":
				want[name][p] = ok
			case name == "administrator":
				want[name][p] = ok
				if p == accounts.PermManageOwners {
					want[name][p] = forbidden
				}
			case name == "secondary" || name == "target":
				want[name][p] = forbidden
				if p == accounts.PermRead {
					want[name][p] = ok
				}
			default: // stranger, other
				want[name][p] = notFound
			}
		}
	}
	expect := func(who, point string, perm accounts.Permission) outcome {
		switch point {
		case "OWN":
			return want[who][perm]
		case "FOREIGN":
			switch who {
			case "admin", "other":
				return ok
			case "target":
				return want["target"][perm]
			}
			return notFound
		}
		return notFound // MISSING
	}

	missingErr := func(p accounts.Principal) string {
		err := f.store.Can(f.ctx, p, "MISSING", accounts.PermRead)
		require.ErrorIs(t, err, accounts.ErrNotFound)
		return err.Error()
	}

	t.Run("Can", func(t *testing.T) {
		for who, p := range principals {
			for _, point := range []string{"OWN", "FOREIGN", "MISSING"} {
				for _, perm := range all {
					err := f.store.Can(f.ctx, p, point, perm)
					w := expect(who, point, perm)
					requireOutcome(t, w, err, fmt.Sprintf("%s %s on %s", who, perm, point))
					if w == notFound {
						require.Equal(t, missingErr(p), strings.Replace(err.Error(), point, "MISSING", 1),
							"a foreign point reads exactly like a missing one")
					}
				}
			}
		}
	})

	t.Run("VisiblePoints", func(t *testing.T) {
		wantVisible := map[string][]string{
			"admin": {"FOREIGN", "OWN"}, "primary": {"OWN"}, "administrator": {"OWN"}, "secondary": {"OWN"},
			"stranger": {}, "other": {"FOREIGN"}, "target": {"FOREIGN", "OWN"},
		}
		for who, p := range principals {
			got, err := f.store.VisiblePoints(f.ctx, p)
			require.NoError(t, err)
			require.Equal(t, wantVisible[who], got, who)
			pts, err := f.store.Points(f.ctx, p)
			require.NoError(t, err)
			require.Len(t, pts, len(wantVisible[who]), who)
		}
	})

	// The operations each permission guards, by principal and point.
	seq := 0
	ops := map[accounts.Permission]func(p accounts.Principal, point string) error{
		accounts.PermRead: func(p accounts.Principal, point string) error {
			_, err1 := f.store.Point(f.ctx, p, point)
			_, err2 := f.store.Devices(f.ctx, p, point)
			_, err3 := f.store.Owners(f.ctx, p, point)
			_, err4 := f.store.Notifications(f.ctx, p, point)
			for _, e := range []error{err2, err3, err4} {
				if !errors.Is(e, err1) && fmt.Sprint(e) != fmt.Sprint(err1) {
					return fmt.Errorf("read operations disagree: %v vs %v", err1, e)
				}
			}
			return err1
		},
		accounts.PermWrite: func(p accounts.Principal, point string) error {
			seq++
			_, err := f.store.UpdatePoint(f.ctx, p, points.Point{Code: point, Name: fmt.Sprintf("renamed %d", seq), Active: true})
			return err
		},
		accounts.PermManageDevices: func(p accounts.Principal, point string) error {
			seq++
			_, err := f.store.AddDevice(f.ctx, p, points.Device{ID: fmt.Sprintf("dev-%d", seq), Point: point, Active: true})
			return err
		},
		accounts.PermManageOwners: func(p accounts.Principal, point string) error {
			seq++
			u, err := f.store.CreateUser(f.ctx, root, accounts.NewUser{Email: fmt.Sprintf("new%d@example.cl", seq)})
			require.NoError(t, err)
			_, err = f.store.Grant(f.ctx, p, point, u.ID, accounts.RelationSecondary, nil)
			return err
		},
		accounts.PermManageNotifications: func(p accounts.Principal, point string) error {
			_, err := f.store.SetNotifications(f.ctx, p, point, users["target"].ID, accounts.NotificationPrefs{
				Types: []accounts.NotificationType{accounts.NotifyDataGap}, Channels: []accounts.Channel{accounts.ChannelInApp}, Active: true})
			return err
		},
	}
	t.Run("operations", func(t *testing.T) {
		for who, p := range principals {
			if who == "target" {
				continue // acting on themselves: see TestNotificationsIntegration
			}
			for _, point := range []string{"OWN", "FOREIGN", "MISSING"} {
				for perm, op := range ops {
					before := f.auditRows()
					err := op(p, point)
					w := expect(who, point, perm)
					requireOutcome(t, w, err, fmt.Sprintf("%s: %s on %s", who, perm, point))
					if w != ok {
						extra := 0
						if perm == accounts.PermManageOwners {
							extra = 1 // the target user's creation
						}
						require.Equal(t, before+extra, f.auditRows(), "a refused change writes no audit row")
					}
				}
			}
		}
	})

	t.Run("devices of foreign points do not exist", func(t *testing.T) {
		p := principals["primary"]
		err := f.store.RemoveDevice(f.ctx, p, "dev-foreign")
		requireOutcome(t, notFound, err, "remove")
		_, err = f.store.UpdateDevice(f.ctx, p, points.Device{ID: "dev-foreign", Point: "OWN", Active: true})
		requireOutcome(t, notFound, err, "steal")
		_, missing := f.store.UpdateDevice(f.ctx, p, points.Device{ID: "dev-missing", Point: "OWN"})
		require.Equal(t, missing.Error(), strings.Replace(err.Error(), "dev-foreign", "dev-missing", 1))
		_, err = f.store.UpdateDevice(f.ctx, p, points.Device{ID: "dev-own", Point: "FOREIGN", Active: true})
		requireOutcome(t, notFound, err, "move to a foreign point")
		err = f.store.RemoveDevice(f.ctx, principals["secondary"], "dev-own")
		requireOutcome(t, forbidden, err, "secondary removes")
		_, err = f.store.UpdateDevice(f.ctx, principals["administrator"], points.Device{ID: "dev-own", Point: "OWN", Provider: "kunak", Active: true})
		requireOutcome(t, ok, err, "administrator updates")
	})

	t.Run("only administrators create and delete points", func(t *testing.T) {
		_, err := f.store.CreatePoint(f.ctx, principals["primary"], points.Point{Code: "NEW"})
		requireOutcome(t, forbidden, err, "primary creates")
		requireOutcome(t, forbidden, f.store.DeletePoint(f.ctx, principals["primary"], "OWN"), "primary deletes own")
		requireOutcome(t, notFound, f.store.DeletePoint(f.ctx, principals["primary"], "FOREIGN"), "primary deletes foreign")
		requireOutcome(t, notFound, f.store.DeletePoint(f.ctx, principals["admin"], "MISSING"), "admin deletes missing")
		err = f.store.DeletePoint(f.ctx, principals["admin"], "FOREIGN")
		require.ErrorIs(t, err, accounts.ErrConflict, "it has a device")
		devs, err := f.store.Devices(f.ctx, principals["other"], "FOREIGN")
		require.NoError(t, err)
		for _, d := range devs {
			require.NoError(t, f.store.RemoveDevice(f.ctx, principals["other"], d.ID))
		}
		require.NoError(t, f.store.DeletePoint(f.ctx, principals["admin"], "FOREIGN"))
		visible, err := f.store.VisiblePoints(f.ctx, principals["other"])
		require.NoError(t, err)
		require.Empty(t, visible, "the grants went with the point")
	})
}

// TestGrantEscalationIntegration: a user who manages owners cannot hand out
// more than they hold, nor touch PRIMARY relations unless PRIMARY.
func TestGrantEscalationIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.point("P1")
	owner := f.user("owner@example.cl", accounts.RoleUser)
	deputy := f.user("deputy@example.cl", accounts.RoleUser)
	guest := f.user("guest@example.cl", accounts.RoleUser)
	f.grant("P1", owner, accounts.RelationPrimary)
	f.grant("P1", deputy, accounts.RelationAdministrator, accounts.PermRead, accounts.PermManageOwners, accounts.PermWrite)
	pd := f.login(deputy)

	_, err := f.store.Grant(f.ctx, pd, "P1", guest.ID, accounts.RelationAdministrator, nil)
	require.ErrorIs(t, err, accounts.ErrForbidden, "ADMINISTRATOR defaults include manage_devices, which deputy lacks")
	_, err = f.store.Grant(f.ctx, pd, "P1", guest.ID, accounts.RelationPrimary, []accounts.Permission{accounts.PermRead})
	require.ErrorIs(t, err, accounts.ErrForbidden, "only a PRIMARY hands out PRIMARY")
	o, err := f.store.Grant(f.ctx, pd, "P1", guest.ID, accounts.RelationSecondary, []accounts.Permission{accounts.PermWrite})
	require.NoError(t, err)
	require.Equal(t, []accounts.Permission{accounts.PermRead, accounts.PermWrite}, o.Permissions, "read is always added")
	require.Equal(t, deputy.ID, o.GrantedBy)
	_, err = f.store.UpdateGrant(f.ctx, pd, "P1", guest.ID, accounts.RelationSecondary, []accounts.Permission{accounts.PermManageCompliance})
	require.ErrorIs(t, err, accounts.ErrForbidden)
	require.ErrorIs(t, f.store.Revoke(f.ctx, pd, "P1", owner.ID), accounts.ErrForbidden, "deputy cannot remove the PRIMARY")
	_, err = f.store.UpdateGrant(f.ctx, pd, "P1", deputy.ID, accounts.RelationAdministrator, accounts.AllPermissions())
	require.ErrorIs(t, err, accounts.ErrForbidden, "nor raise themselves")

	_, err = f.store.Grant(f.ctx, pd, "P1", guest.ID, accounts.RelationSecondary, nil)
	require.ErrorIs(t, err, accounts.ErrConflict)
	_, err = f.store.Grant(f.ctx, pd, "P1", 987654, accounts.RelationSecondary, nil)
	require.ErrorIs(t, err, accounts.ErrNotFound)
	_, err = f.store.Grant(f.ctx, pd, "P1", guest.ID, "OWNER", nil)
	require.ErrorIs(t, err, accounts.ErrInvalid)

	// The guest leaves on their own.
	require.NoError(t, f.store.Revoke(f.ctx, f.login(guest), "P1", guest.ID))
	require.ErrorIs(t, f.store.Revoke(f.ctx, pd, "P1", guest.ID), accounts.ErrNotFound)
	// The PRIMARY may remove the deputy.
	require.NoError(t, f.store.Revoke(f.ctx, f.login(owner), "P1", deputy.ID))
	require.ErrorIs(t, f.store.Can(f.ctx, pd, "P1", accounts.PermRead), accounts.ErrNotFound)
}

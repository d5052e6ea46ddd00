package accounts_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/points"
)

// TestEveryChangeIsAuditedIntegration makes each kind of change once and
// checks that it wrote exactly one audit row, with the actor, the entity
// and its state before and after; and that a change that changes nothing
// writes none.
func TestEveryChangeIsAuditedIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := audit.WithRequestID(f.ctx, "req-42")
	admin := f.user("admin@example.cl", accounts.RoleAdmin)
	pa := f.login(admin)
	var ana accounts.User
	var tokenID int64
	pt := points.Point{Code: "P1", Name: "Pozo 1", Kind: "well", Active: true}

	type step struct {
		name     string
		do       func() error
		action   string
		entity   string // entity_type/entity_id
		point    string
		before   map[string]any // subset of the JSON; nil: NULL
		after    map[string]any
		noChange bool // the change is a no-op: no row at all
	}
	steps := []step{
		{name: "create user", do: func() (err error) {
			ana, err = f.store.CreateUser(ctx, pa, accounts.NewUser{Email: "Ana@Example.cl", Name: "Ana"})
			return err
		}, action: "user.create", entity: "user/", after: map[string]any{"email": "Ana@Example.cl", "role": "user", "active": true}},
		{name: "update user", do: func() error {
			_, err := f.store.UpdateUser(ctx, pa, ana.ID, accounts.UserChanges{Name: new("Ana María")})
			return err
		}, action: "user.update", entity: "user/", before: map[string]any{"name": "Ana"}, after: map[string]any{"name": "Ana María"}},
		{name: "update user to the same", do: func() error {
			_, err := f.store.UpdateUser(ctx, pa, ana.ID, accounts.UserChanges{Name: new("Ana María")})
			return err
		}, noChange: true},
		{name: "create token", do: func() error {
			_, tok, err := f.store.CreateToken(ctx, pa, ana.ID, "laptop", time.Hour)
			tokenID = tok.ID
			return err
		}, action: "token.create", entity: "token/", after: map[string]any{"name": "laptop", "revoked_at": nil}},
		{name: "revoke token", do: func() error {
			_, err := f.store.RevokeToken(ctx, pa, tokenID)
			return err
		}, action: "token.revoke", entity: "token/", before: map[string]any{"revoked_at": nil}, after: map[string]any{"name": "laptop"}},
		{name: "create point", do: func() error {
			_, err := f.store.CreatePoint(ctx, pa, pt)
			return err
		}, action: "point.create", entity: "point/P1", point: "P1", after: map[string]any{"name": "Pozo 1", "timezone": "America/Santiago"}},
		{name: "update point", do: func() error {
			pt.Name = "Pozo Uno"
			_, err := f.store.UpdatePoint(ctx, pa, pt)
			return err
		}, action: "point.update", entity: "point/P1", point: "P1", before: map[string]any{"name": "Pozo 1"}, after: map[string]any{"name": "Pozo Uno"}},
		{name: "update point to the same", do: func() error {
			_, err := f.store.UpdatePoint(ctx, pa, pt)
			return err
		}, noChange: true},
		{name: "add device", do: func() error {
			_, err := f.store.AddDevice(ctx, pa, points.Device{ID: "D1", Point: "P1", Provider: "generic-json", Active: true})
			return err
		}, action: "device.create", entity: "device/D1", point: "P1", after: map[string]any{"provider": "generic-json"}},
		{name: "update device", do: func() error {
			_, err := f.store.UpdateDevice(ctx, pa, points.Device{ID: "D1", Point: "P1", Provider: "lorawan-ttn", Active: true})
			return err
		}, action: "device.update", entity: "device/D1", point: "P1", before: map[string]any{"provider": "generic-json"}, after: map[string]any{"provider": "lorawan-ttn"}},
		{name: "grant", do: func() error {
			_, err := f.store.Grant(ctx, pa, "P1", ana.ID, accounts.RelationSecondary, nil)
			return err
		}, action: "owner.grant", entity: "point_owner/P1/", point: "P1", after: map[string]any{"relation": "SECONDARY", "permissions": []any{"read"}}},
		{name: "update grant", do: func() error {
			_, err := f.store.UpdateGrant(ctx, pa, "P1", ana.ID, accounts.RelationAdministrator, nil)
			return err
		}, action: "owner.update", entity: "point_owner/P1/", point: "P1", before: map[string]any{"relation": "SECONDARY"}, after: map[string]any{"relation": "ADMINISTRATOR"}},
		{name: "set notifications", do: func() error {
			_, err := f.store.SetNotifications(ctx, pa, "P1", ana.ID, accounts.NotificationPrefs{
				Types: []accounts.NotificationType{accounts.NotifyThreshold}, Channels: []accounts.Channel{accounts.ChannelEmail}, Active: true})
			return err
		}, action: "notifications.set", entity: "point_notification/P1/", point: "P1", after: map[string]any{"language": "es", "channels": []any{"email"}}},
		{name: "change notifications", do: func() error {
			_, err := f.store.SetNotifications(ctx, pa, "P1", ana.ID, accounts.NotificationPrefs{
				Types: []accounts.NotificationType{accounts.NotifyThreshold}, Channels: []accounts.Channel{accounts.ChannelEmail}, Language: "en", Active: true})
			return err
		}, action: "notifications.set", entity: "point_notification/P1/", point: "P1", before: map[string]any{"language": "es"}, after: map[string]any{"language": "en"}},
		{name: "same notifications", do: func() error {
			_, err := f.store.SetNotifications(ctx, pa, "P1", ana.ID, accounts.NotificationPrefs{
				Types: []accounts.NotificationType{accounts.NotifyThreshold}, Channels: []accounts.Channel{accounts.ChannelEmail}, Language: "en", Active: true})
			return err
		}, noChange: true},
		{name: "revoke grant", do: func() error {
			return f.store.Revoke(ctx, pa, "P1", ana.ID)
		}, action: "owner.revoke", entity: "point_owner/P1/", point: "P1", before: map[string]any{"relation": "ADMINISTRATOR"}},
		{name: "remove device", do: func() error {
			return f.store.RemoveDevice(ctx, pa, "D1")
		}, action: "device.delete", entity: "device/D1", point: "P1", before: map[string]any{"provider": "lorawan-ttn"}},
		{name: "delete point", do: func() error {
			return f.store.DeletePoint(ctx, pa, "P1")
		}, action: "point.delete", entity: "point/P1", point: "P1", before: map[string]any{"name": "Pozo Uno"}},
		{name: "delete user", do: func() error {
			return f.store.DeleteUser(ctx, pa, ana.ID)
		}, action: "user.delete", entity: "user/", before: map[string]any{"name": "Ana María"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			n := f.auditRows()
			require.NoError(t, s.do())
			if s.noChange {
				require.Equal(t, n, f.auditRows(), "no change, no row")
				return
			}
			require.Equal(t, n+1, f.auditRows(), "exactly one row")
			ev := f.lastAudit()
			require.Equal(t, s.action, ev.Action)
			require.Equal(t, admin.ID, ev.ActorUserID)
			require.Equal(t, "user:admin@example.cl", ev.Actor)
			require.Equal(t, "req-42", ev.RequestID)
			require.Equal(t, s.point, ev.Point)
			require.WithinDuration(t, time.Now(), ev.At, time.Minute)
			entity := ev.EntityType + "/" + ev.EntityID
			require.Regexp(t, "^"+s.entity, entity)
			checkJSON(t, "before", s.before, ev.Before)
			checkJSON(t, "after", s.after, ev.After)
		})
	}

	// The revocation recorded the notification preferences it removed.
	evs, err := audit.List(f.ctx, f.pool, audit.Filter{Action: "owner.revoke"})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	checkJSON(t, "before", map[string]any{"notifications": map[string]any{"active": true, "channels": []any{"email"},
		"language": "en", "notification_types": []any{"threshold"}}}, evs[0].Before)
	// A point's history is one query.
	evs, err = audit.List(f.ctx, f.pool, audit.Filter{Point: "P1", Limit: 1000})
	require.NoError(t, err)
	require.Len(t, evs, 11)
	// The CLI (system principal) has no user id.
	_, err = f.store.CreatePoint(f.ctx, root, points.Point{Code: "P2"})
	require.NoError(t, err)
	ev := f.lastAudit()
	require.Zero(t, ev.ActorUserID)
	require.Equal(t, "test:root", ev.Actor)
	require.Empty(t, ev.RequestID)
}

// checkJSON requires raw to be NULL when want is nil, else an object
// holding want's keys with want's values.
func checkJSON(t *testing.T, which string, want map[string]any, raw json.RawMessage) {
	t.Helper()
	if want == nil {
		require.Nil(t, raw, "%s must be NULL", which)
		return
	}
	require.NotNil(t, raw, "%s must be set", which)
	var got map[string]any
	require.NoError(t, json.Unmarshal(raw, &got), "%s: %s", which, raw)
	for k, v := range want {
		require.Contains(t, got, k, "%s: %s", which, raw)
		require.Equal(t, v, got[k], "%s.%s: %s", which, k, raw)
	}
}

func TestAuditLogIsAppendOnlyIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.point("P1")
	require.Equal(t, 1, f.auditRows())
	for _, sql := range []string{
		`UPDATE audit_log SET actor = 'someone else'`,
		`UPDATE audit_log SET after = NULL WHERE action = 'point.create'`,
		`DELETE FROM audit_log`,
		`TRUNCATE audit_log`,
	} {
		_, err := f.pool.Exec(f.ctx, sql)
		require.ErrorContains(t, err, "audit_log is append-only", sql)
	}
	require.Equal(t, 1, f.auditRows())
	require.Equal(t, "test:root", f.lastAudit().Actor)
}

// TestConcurrentGrantsIntegration races grants of the same point to the
// same user: exactly one wins, the others get ErrConflict, and one audit
// row is written.
func TestConcurrentGrantsIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.point("P1")
	const rounds, racers = 5, 4
	for round := range rounds {
		u := f.user("racer"+string(rune('a'+round))+"@example.cl", accounts.RoleUser)
		before := f.auditRows()
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, racers)
		for i := range racers {
			wg.Go(func() {
				<-start
				rel := accounts.RelationSecondary
				if i%2 == 1 {
					rel = accounts.RelationAdministrator
				}
				_, errs[i] = f.store.Grant(f.ctx, root, "P1", u.ID, rel, nil)
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
				continue
			}
			require.ErrorIs(t, err, accounts.ErrConflict)
		}
		require.Equal(t, 1, won, "round %d: %v", round, errs)
		require.Equal(t, before+1, f.auditRows(), "one grant, one audit row")
		owners, err := f.store.Owners(f.ctx, root, "P1")
		require.NoError(t, err)
		require.Len(t, owners, round+1)
	}
}

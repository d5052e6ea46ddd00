package accounts_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
)

func TestNotificationsIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.point("P1")
	f.point("P2")
	owner := f.user("owner@example.cl", accounts.RoleUser)
	sec := f.user("sec@example.cl", accounts.RoleUser)
	stranger := f.user("stranger@example.cl", accounts.RoleUser)
	f.grant("P1", owner, accounts.RelationPrimary)
	f.grant("P1", sec, accounts.RelationSecondary)
	po, ps := f.login(owner), f.login(sec)
	inApp := accounts.NotificationPrefs{Types: []accounts.NotificationType{accounts.NotifyDataGap, accounts.NotifyThreshold},
		Channels: []accounts.Channel{accounts.ChannelInApp}, Active: true}

	t.Run("validation", func(t *testing.T) {
		cases := []struct {
			name  string
			prefs accounts.NotificationPrefs
		}{
			{"unknown type", accounts.NotificationPrefs{Types: []accounts.NotificationType{"earthquake"}, Channels: []accounts.Channel{"email"}, Active: true}},
			{"unknown channel", accounts.NotificationPrefs{Channels: []accounts.Channel{"pigeon"}, Active: true}},
			{"active without channel", accounts.NotificationPrefs{Active: true}},
			{"sms without phone", accounts.NotificationPrefs{Channels: []accounts.Channel{"sms"}, Active: true}},
			{"bad phone", accounts.NotificationPrefs{Channels: []accounts.Channel{"sms"}, Phone: "912345678", Active: true}},
			{"webhook without url", accounts.NotificationPrefs{Channels: []accounts.Channel{"webhook"}, Active: true}},
			{"webhook not http", accounts.NotificationPrefs{Channels: []accounts.Channel{"webhook"}, WebhookURL: "ftp://x", Active: true}},
			{"language", accounts.NotificationPrefs{Channels: []accounts.Channel{"email"}, Language: "pt", Active: true}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := f.store.SetNotifications(f.ctx, ps, "P1", sec.ID, c.prefs)
				require.ErrorIs(t, err, accounts.ErrInvalid)
			})
		}
	})

	t.Run("users set their own", func(t *testing.T) {
		got, err := f.store.SetNotifications(f.ctx, ps, "P1", sec.ID, accounts.NotificationPrefs{
			Types:    []accounts.NotificationType{accounts.NotifyDailyReport, accounts.NotifyThreshold, accounts.NotifyThreshold},
			Channels: []accounts.Channel{accounts.ChannelWebhook, accounts.ChannelSMS}, Phone: "+56912345678",
			WebhookURL: "https://hooks.example.cl/x", Active: true})
		require.NoError(t, err)
		require.Equal(t, []accounts.NotificationType{accounts.NotifyThreshold, accounts.NotifyDailyReport}, got.Types, "canonical order, no duplicates")
		require.Equal(t, []accounts.Channel{accounts.ChannelSMS, accounts.ChannelWebhook}, got.Channels)
		require.Equal(t, "es", got.Language, "Spanish by default")
		list, err := f.store.Notifications(f.ctx, ps, "P1")
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.Equal(t, sec.ID, list[0].UserID)
	})

	t.Run("others need manage_notifications", func(t *testing.T) {
		_, err := f.store.SetNotifications(f.ctx, ps, "P1", owner.ID, inApp)
		require.ErrorIs(t, err, accounts.ErrForbidden)
		_, err = f.store.SetNotifications(f.ctx, po, "P1", owner.ID, inApp)
		require.NoError(t, err)
		list, err := f.store.Notifications(f.ctx, ps, "P1")
		require.NoError(t, err)
		require.Len(t, list, 1, "a SECONDARY sees only their own")
		list, err = f.store.Notifications(f.ctx, po, "P1")
		require.NoError(t, err)
		require.Len(t, list, 2, "the PRIMARY sees everyone's")
	})

	t.Run("only for related users and visible points", func(t *testing.T) {
		_, err := f.store.SetNotifications(f.ctx, po, "P1", stranger.ID, inApp)
		require.ErrorIs(t, err, accounts.ErrNotFound, "the stranger has no relation to P1")
		_, err = f.store.SetNotifications(f.ctx, f.login(stranger), "P1", stranger.ID, inApp)
		require.ErrorIs(t, err, accounts.ErrNotFound)
		_, err = f.store.SetNotifications(f.ctx, po, "P2", owner.ID, inApp)
		require.ErrorIs(t, err, accounts.ErrNotFound)
		_, err = f.store.SetNotifications(f.ctx, root, "P2", owner.ID, inApp)
		require.ErrorIs(t, err, accounts.ErrNotFound, "even an administrator cannot subscribe someone unrelated")
	})

	t.Run("revoking access removes the preferences", func(t *testing.T) {
		require.NoError(t, f.store.Revoke(f.ctx, po, "P1", sec.ID))
		list, err := f.store.Notifications(f.ctx, po, "P1")
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.Equal(t, owner.ID, list[0].UserID)
	})
}

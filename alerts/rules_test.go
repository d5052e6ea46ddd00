package alerts_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/alerts"
)

func TestParseParams(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		kind   alerts.Kind
		raw    string
		want   alerts.Params
		errKey string
	}{
		{name: "threshold", kind: alerts.KindThresholdAbove, raw: `{"limit": 12.5}`, want: alerts.Params{Limit: 12.5}},
		{name: "threshold deadband", kind: alerts.KindThresholdBelow, raw: `{"limit": -1, "deadband": 0.5}`, want: alerts.Params{Limit: -1, Deadband: 0.5}},
		{name: "threshold without limit", kind: alerts.KindThresholdAbove, raw: `{}`, errKey: "params.limit"},
		{name: "threshold string limit", kind: alerts.KindThresholdAbove, raw: `{"limit": "12"}`, errKey: "params.limit"},
		{name: "negative deadband", kind: alerts.KindThresholdAbove, raw: `{"limit": 1, "deadband": -1}`, errKey: "params.deadband"},
		{name: "rate", kind: alerts.KindRateOfChange, raw: `{"max_per_minute": 3}`, want: alerts.Params{MaxPerMinute: 3}},
		{name: "rate zero", kind: alerts.KindRateOfChange, raw: `{"max_per_minute": 0}`, errKey: "params.max_per_minute"},
		{name: "gap", kind: alerts.KindDataGap, raw: `{"after": "15m"}`, want: alerts.Params{After: 15 * time.Minute}},
		{name: "gap without after", kind: alerts.KindDataGap, raw: ``, errKey: "params.after"},
		{name: "gap bad duration", kind: alerts.KindDataGap, raw: `{"after": "-5m"}`, errKey: "params.after"},
		{name: "gap number", kind: alerts.KindDataGap, raw: `{"after": 900}`, errKey: "params.after"},
		{name: "stuck", kind: alerts.KindStuck, raw: `{"window": "30m", "tolerance": 0.1}`, want: alerts.Params{Window: 30 * time.Minute, Tolerance: 0.1}},
		{name: "stuck unknown key", kind: alerts.KindStuck, raw: `{"window": "30m", "limit": 1}`, errKey: "params.limit"},
		{name: "reset default", kind: alerts.KindTotalizerReset, raw: `{}`, want: alerts.Params{ClearAfter: alerts.DefaultClearAfter}},
		{name: "missing default", kind: alerts.KindComplianceMissing, raw: `{}`, want: alerts.Params{}},
		{name: "rejected default", kind: alerts.KindComplianceRejected, raw: `null`, errKey: "params"},
		{name: "rejected within", kind: alerts.KindComplianceRejected, raw: `{"within": "24h"}`, want: alerts.Params{Within: 24 * time.Hour}},
		{name: "not an object", kind: alerts.KindDataGap, raw: `[1]`, errKey: "params"},
		{name: "unknown kind", kind: "bogus", raw: `{}`, errKey: "kind"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := alerts.ParseParams(c.kind, json.RawMessage(c.raw))
			if c.errKey != "" {
				var fe *alerts.FieldError
				require.True(t, errors.As(err, &fe), "%v", err)
				require.Equal(t, c.errKey, fe.Field, "%v", err)
				require.ErrorIs(t, err, alerts.ErrInvalid)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestKindNotificationTypes(t *testing.T) {
	t.Parallel()
	known := accounts.AllNotificationTypes()
	for _, k := range alerts.AllKinds() {
		require.Contains(t, known, k.NotificationType(), "kind %s", k)
	}
	require.Equal(t, accounts.NotifyThreshold, alerts.KindRateOfChange.NotificationType())
	require.Equal(t, accounts.NotifyStuckSensor, alerts.KindStuck.NotificationType())
}

func TestNotificationID(t *testing.T) {
	t.Parallel()
	require.Equal(t, "alert:42:renotified:3:7", alerts.NotificationID(42, alerts.EventRenotified, 3, 7))
	v := 12.5
	e := alerts.PendingEvent{AlertID: 42, RuleID: 9, Event: alerts.EventOpened, N: 1,
		At: time.Date(2026, 3, 2, 13, 0, 0, 0, time.UTC), Value: &v, Details: map[string]any{"unit": "L/s", "limit": 10.0},
		Point: "P1", PointName: "Pozo 1", TimeZone: "America/Santiago", Variable: "flow", Kind: alerts.KindThresholdAbove, Severity: "critical"}
	n := e.Notification(alerts.Recipient{UserID: 7, Language: "es"})
	require.Equal(t, "alert:42:opened:1:7", n.ID)
	require.Equal(t, "7", n.UserID)
	require.Equal(t, "threshold", n.Type)
	require.Equal(t, e.At, n.CreatedAt, "created_at comes from the event: a re-produce is identical")
	require.Equal(t, map[string]string{"point_name": "Pozo 1", "time_zone": "America/Santiago", "alert_id": "42",
		"rule_id": "9", "state": "opened", "kind": "threshold_above", "at": "2026-03-02T13:00:00Z", "n": "1",
		"language": "es", "variable": "flow", "value": "12.5", "unit": "L/s", "limit": "10"}, n.Data)
	require.Equal(t, n, e.Notification(alerts.Recipient{UserID: 7, Language: "es"}))
}

package alerts_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/alerts"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// TestObserveAndOutboxIntegration: concurrent openings of one alert (two
// replicas) collapse into one alert and one event; a failed produce leaves
// the event in the outbox, a successful one marks it with its recipients.
func TestObserveAndOutboxIntegration(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, 2*time.Minute)
	_, err := timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	for _, sql := range []string{
		`INSERT INTO catchment_points (code, name) VALUES ('P1', 'Pozo 1')`,
		`INSERT INTO users (id, email) VALUES (7, 'a@example.cl'), (8, 'b@example.cl'), (9, 'c@example.cl')`,
		`INSERT INTO point_owners (point, user_id, relation) VALUES ('P1', 7, 'PRIMARY'), ('P1', 8, 'SECONDARY'), ('P1', 9, 'SECONDARY')`,
		`INSERT INTO point_notifications (point, user_id, notification_types) VALUES ('P1', 7, '{threshold}'), ('P1', 8, '{threshold,data_gap}'), ('P1', 9, '{data_gap}')`,
		`INSERT INTO alert_rules (point, variable, kind, params) VALUES ('P1', 'flow', 'threshold_above', '{"limit": 10}')`,
	} {
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	store := alerts.NewStore(pool, nil)
	rules, err := store.ActiveRules(ctx)
	require.NoError(t, err)
	require.Len(t, rules, 1)
	now := time.Date(2026, 3, 2, 13, 0, 0, 0, time.UTC)
	v := 12.0
	var wg sync.WaitGroup
	events := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			out, err := store.Observe(ctx, rules[0], "flow", alerts.Observation{Firing: true, Value: &v, At: now}, now, time.Hour)
			if err != nil {
				t.Error(err)
			}
			events <- out.Event
		})
	}
	wg.Wait()
	close(events)
	opened := 0
	for ev := range events {
		if ev == alerts.EventOpened {
			opened++
		}
	}
	require.Equal(t, 1, opened)
	open, err := store.UnresolvedAlerts(ctx)
	require.NoError(t, err)
	require.Len(t, open, 1)

	failing := func(context.Context, []schemas.Notification) error { return errors.New("kafka down") }
	_, _, err = store.ProducePending(ctx, 10, failing)
	require.Error(t, err)
	n, err := store.PendingCount(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "a failed produce leaves the event in the outbox")

	var got []schemas.Notification
	evs, notes, err := store.ProducePending(ctx, 10, func(_ context.Context, ns []schemas.Notification) error {
		got = append(got, ns...)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, evs)
	require.Equal(t, 2, notes, "users 7 and 8 take threshold, 9 does not")
	require.Equal(t, "alert:1:opened:1:7", got[0].ID)
	require.Equal(t, "alert:1:opened:1:8", got[1].ID)
	n, err = store.PendingCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	// Not firing: resolved once.
	out, err := store.Observe(ctx, rules[0], "flow", alerts.Observation{At: now.Add(time.Minute)}, now.Add(time.Minute), time.Hour)
	require.NoError(t, err)
	require.Equal(t, alerts.EventResolved, out.Event)
	out, err = store.Observe(ctx, rules[0], "flow", alerts.Observation{At: now.Add(time.Minute)}, now.Add(time.Minute), time.Hour)
	require.NoError(t, err)
	require.Empty(t, out.Event)
	require.Zero(t, out.Alert.ID)

	// Before migration 0006 (or with its table gone) compliance rules
	// have nothing to read: a sentinel the stage skips on, not a failure.
	c, err := store.ComplianceMissing(ctx, "P1", now)
	require.NoError(t, err)
	require.Zero(t, c.Count)
	_, err = pool.Exec(ctx, `DROP TABLE compliance_submissions CASCADE`)
	require.NoError(t, err)
	var elsewhere bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('compliance_submissions') IS NOT NULL`).Scan(&elsewhere))
	if !elsewhere { // not shadowed by a table of another schema on the search path
		_, err = store.ComplianceMissing(ctx, "P1", now)
		require.ErrorIs(t, err, alerts.ErrNoComplianceTable)
		_, err = store.ComplianceRejected(ctx, "P1", now)
		require.ErrorIs(t, err, alerts.ErrNoComplianceTable)
	}
}

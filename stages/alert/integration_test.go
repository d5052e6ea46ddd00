package alert_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/alerts"
	"github.com/stackvps/stackvps/config"
)

// TestPerReadingRulesIntegration drives every per-reading rule kind through
// the real stage (Kafka in, PostgreSQL state, Kafka out) with a scripted
// stream: each fires once, stays deduplicated while it keeps firing, is
// re-notified once the renotify interval passed, and resolves when its
// condition clears; an acknowledged alert is not re-notified but resolves.
func TestPerReadingRulesIntegration(t *testing.T) {
	e := newEnv(t)
	rFlow := e.rule("P1", "flow", alerts.KindThresholdAbove, `{"limit": 10, "deadband": 1}`, time.Hour)
	rLevel := e.rule("P1", "level", alerts.KindThresholdBelow, `{"limit": 5}`, time.Hour)
	rRate := e.rule("P1", "pressure", alerts.KindRateOfChange, `{"max_per_minute": 5}`, time.Hour)
	rStuck := e.rule("P1", "temp", alerts.KindStuck, `{"window": "10m", "tolerance": 0.1}`, time.Hour)
	rReset := e.rule("P1", "totalizer", alerts.KindTotalizerReset, `{"clear_after": "30m"}`, time.Hour)
	// A rule of another point that never fires.
	e.rule("P2", "flow", alerts.KindThresholdAbove, `{"limit": 1000}`, 0)
	s := e.start(testConfig())

	base := e.clock.Now()
	sent := 0
	step := func(now time.Time, minute int, flow, level, pressure, temp, total float64) {
		t.Helper()
		e.clock.Set(now)
		at := base.Add(time.Duration(minute) * time.Minute)
		e.send(time.Time{},
			reading("P1", "flow", at, flow, 0), reading("P1", "level", at, level, 0),
			reading("P1", "pressure", at, pressure, 0), reading("P1", "temp", at, temp, 0),
			reading("P1", "totalizer", at, total, 0), reading("P2", "flow", at, flow, 0))
		sent += 6
		e.consumed(s, sent)
	}
	minute := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }

	step(minute(0), 0, 5, 8, 100, 20, 1000)
	require.Empty(t, e.events(), "nothing fires on the first readings")
	step(minute(1), 1, 12, 4, 120, 20, 1001)
	step(minute(2), 2, 13, 3, 140, 20.05, 500) // totalizer drop: reset
	for m := 3; m <= 11; m++ {
		step(minute(m), m, 13, 3, 100+20*float64(m), 20, 500+float64(m))
	}
	// Each fired exactly once, however long it kept firing.
	for _, r := range []int64{rFlow, rLevel, rRate, rStuck, rReset} {
		e.waitEvents(r, "opened:1")
	}

	// Two hours later (processing time) still firing: re-notified once.
	step(base.Add(2*time.Hour), 12, 14, 2, 340, 20, 100)
	for _, r := range []int64{rFlow, rLevel, rRate, rStuck, rReset} {
		e.waitEvents(r, "opened:1", "renotified:1")
	}

	// Every condition clears (the reset clear_after later in event time).
	step(base.Add(2*time.Hour+time.Minute), 45, 8, 6, 341, 25, 200)
	for _, r := range []int64{rFlow, rLevel, rRate, rStuck, rReset} {
		e.waitEvents(r, "opened:1", "renotified:1", "resolved:1")
	}

	// Notifications: one per event for the subscribed user, with the
	// deterministic ids and the kind's notification type.
	types := map[string]string{}
	eventually(t, func() bool { return len(e.notificationIDs()) == 15 }, "15 notifications (have %d)", len(e.notificationIDs()))
	for _, n := range e.notifications() {
		types[n.Data["kind"]] = n.Type
		require.Equal(t, fmt.Sprint(e.userID), n.UserID)
		require.Equal(t, "P1", *n.Point)
		require.Equal(t, "Pozo 1", n.Data["point_name"])
		require.Equal(t, alerts.NotificationID(mustInt(t, n.Data["alert_id"]), n.Data["state"], 1, e.userID), n.ID)
	}
	require.Equal(t, map[string]string{"threshold_above": "threshold", "threshold_below": "threshold",
		"rate_of_change": "threshold", "stuck": "stuck_sensor", "totalizer_reset": "totalizer_reset"}, types)

	// Acknowledged: no re-notification, still resolved automatically.
	step(base.Add(2*time.Hour+2*time.Minute), 46, 20, 6, 342, 26, 201)
	e.waitEvents(rFlow, "opened:1", "renotified:1", "resolved:1", "opened:1")
	var alertID int64
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT id FROM alerts WHERE rule_id = $1 AND state = 'open'`, rFlow).Scan(&alertID))
	api := alerts.NewStore(e.pool, accounts.New(e.pool))
	a, err := api.Acknowledge(context.Background(), accounts.System("test"), alertID)
	require.NoError(t, err)
	require.Equal(t, alerts.StateAcknowledged, a.State)
	step(base.Add(5*time.Hour), 47, 21, 6, 343, 27, 202)
	require.Equal(t, []string{"opened:1", "renotified:1", "resolved:1", "opened:1"}, e.eventsOf(rFlow))
	step(base.Add(5*time.Hour+time.Minute), 48, 5, 6, 344, 28, 203)
	e.waitEvents(rFlow, "opened:1", "renotified:1", "resolved:1", "opened:1", "resolved:1")

	require.Equal(t, 2.0, testutil.ToFloat64(counter(t, s.reg, "stackvps_alert_alerts_opened_total", "kind", "threshold_above")))
	require.Equal(t, 2.0, testutil.ToFloat64(counter(t, s.reg, "stackvps_alert_alerts_resolved_total", "kind", "threshold_above")))
	require.Equal(t, 1.0, testutil.ToFloat64(counter(t, s.reg, "stackvps_alert_alerts_opened_total", "kind", "stuck")))
	require.Positive(t, testutil.ToFloat64(counter(t, s.reg, "stackvps_alert_notifications_produced_total")))
	require.Zero(t, countRows(t, e, `SELECT count(*) FROM alerts WHERE rule_id IN (SELECT id FROM alert_rules WHERE point = 'P2')`))
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	_, err := fmt.Sscan(s, &n)
	require.NoError(t, err)
	return n
}

func countRows(t *testing.T, e *env, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// TestDataGapIntegration: a gap is not judged while the stage lags (what
// it consumes was received longer than lag_tolerance ago), even
// though the processing clock says the sensor is silent; once the
// partition is caught up the real gap fires, and the next reading resolves
// it.
func TestDataGapIntegration(t *testing.T) {
	e := newEnv(t)
	rGap := e.rule("P1", "flow", alerts.KindDataGap, `{"after": "15m"}`, time.Hour)
	t0 := e.clock.Now()
	// The stage starts 30 minutes behind: its clock says t0+50m, the
	// backlog holds P1's last flow reading (t0) and then readings of P2
	// received (and produced) at t0+20m. On the arrival clock P1 has been
	// silent for 20 minutes, on the processing clock for 50: neither may
	// be judged while the stage catches up.
	e.clock.Set(t0.Add(50 * time.Minute))
	first := reading("P1", "flow", t0, 5, 0)
	first.ReceivedAt = t0
	e.send(t0, first)
	behind := t0.Add(20 * time.Minute)
	for i := range 15 {
		r := reading("P2", "flow", behind.Add(time.Duration(i)*time.Second), 1, 0)
		r.ReceivedAt = behind.Add(time.Duration(i) * time.Second)
		e.send(r.ReceivedAt, r)
	}
	s := e.start(testConfig())
	e.consumed(s, 16)
	eventually(t, func() bool {
		return testutil.ToFloat64(counter(t, s.reg, "stackvps_alert_gap_checks_skipped_total", "reason", "lagging")) >= 3
	}, "evaluations that skip the lagging partition")
	require.Empty(t, e.eventsOf(rGap), "a lagging pipeline must not cry wolf")

	// Caught up: the partition yielded nothing for idle_after; the gap
	// (51 minutes without a flow reading of P1) is real now.
	e.clock.Set(t0.Add(51 * time.Minute))
	e.waitEvents(rGap, "opened:1")
	// Still silent two hours later: re-notified, once.
	e.clock.Set(t0.Add(3 * time.Hour))
	e.waitEvents(rGap, "opened:1", "renotified:1")
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, []string{"opened:1", "renotified:1"}, e.eventsOf(rGap))

	// The sensor is back.
	e.send(time.Time{}, reading("P1", "flow", t0.Add(3*time.Hour), 5, 0))
	e.waitEvents(rGap, "opened:1", "renotified:1", "resolved:1")
	ids := e.notificationIDs()
	require.Len(t, ids, 3)
	for _, n := range e.notifications() {
		require.Equal(t, "data_gap", n.Type)
		require.Equal(t, "flow", n.Data["variable"])
	}
}

// TestRestartIntegration: a restart neither re-opens nor re-notifies an
// alert already open, and an event recorded but not confirmed produced
// before the "crash" is produced again with the same id.
func TestRestartIntegration(t *testing.T) {
	e := newEnv(t)
	rFlow := e.rule("P1", "flow", alerts.KindThresholdAbove, `{"limit": 10}`, time.Hour)
	rGap := e.rule("P2", "", alerts.KindDataGap, `{"after": "15m"}`, time.Hour)
	base := e.clock.Now()
	s1 := e.start(testConfig())
	e.send(time.Time{}, reading("P1", "flow", base, 12, 0), reading("P2", "level", base, 3, 0))
	e.consumed(s1, 2)
	e.waitEvents(rFlow, "opened:1")
	require.NoError(t, s1.stop())
	require.Len(t, e.notificationIDs(), 1)

	// As if the process died after the event was stored and before its
	// notification was acknowledged.
	e.exec(`UPDATE alert_events SET produced_at = NULL`)

	// P2 went silent before the restart (the sink stored its last
	// reading): the new stage never sees its series, and seeds it from
	// the readings table.
	e.exec(`INSERT INTO readings (time, point, variable, value) VALUES ($1, 'P2', 'level', 3)`, base)
	e.clock.Set(base.Add(10 * time.Minute))
	s2 := e.start(testConfig())
	// Still firing, and the first reading replayed.
	e.send(time.Time{}, reading("P1", "flow", base, 12, 0), reading("P1", "flow", base.Add(10*time.Minute), 13, 0))
	e.consumed(s2, 2)
	eventually(t, func() bool { return len(e.notifications()) == 2 }, "the unconfirmed event produced again")
	require.Len(t, e.notificationIDs(), 1, "produced again with the same id")
	e.waitEvents(rFlow, "opened:1")
	require.Equal(t, 1, countRows(t, e, `SELECT count(*) FROM alerts`))

	e.clock.Set(base.Add(20 * time.Minute))
	e.waitEvents(rGap, "opened:1")
	require.NoError(t, s2.stop())

	// A third start, an hour and a half later: the threshold is
	// re-notified once (its interval passed), never re-opened.
	e.clock.Set(base.Add(90 * time.Minute))
	s3 := e.start(testConfig())
	e.send(time.Time{}, reading("P1", "flow", base.Add(90*time.Minute), 14, 0))
	e.consumed(s3, 1)
	e.clock.Set(base.Add(91 * time.Minute)) // the new stage has run idle_after
	e.waitEvents(rFlow, "opened:1", "renotified:1")
	e.waitEvents(rGap, "opened:1", "renotified:1")
	require.Equal(t, 2, countRows(t, e, `SELECT count(*) FROM alerts`))
}

// TestComplianceRulesIntegration: missing and rejected compliance slots
// open alerts, deduplicated across evaluations and re-notified, which
// resolve when the slots get data or are confirmed.
func TestComplianceRulesIntegration(t *testing.T) {
	e := newEnv(t)
	rMissing := e.rule("P1", "", alerts.KindComplianceMissing, `{}`, time.Hour)
	rRejected := e.rule("P1", "", alerts.KindComplianceRejected, `{"within": "24h"}`, time.Hour)
	now := e.clock.Now()
	missing := e.slot("P1", now.Add(-7*time.Hour), "PENDING", false)
	e.slot("P1", now.Add(-1*time.Hour), "PENDING", false) // not missing yet
	rejected := e.slot("P1", now.Add(-3*time.Hour), "REJECTED", true)
	e.start(testConfig())
	e.waitEvents(rMissing, "opened:1")
	e.waitEvents(rRejected, "opened:1")
	var details string
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT details->>'slots' FROM alerts WHERE rule_id = $1`, rMissing).Scan(&details))
	require.Equal(t, "1", details)
	// Many evaluations later, still one event each; two hours later, one
	// re-notification each.
	time.Sleep(time.Second)
	require.Equal(t, []string{"opened:1"}, e.eventsOf(rMissing))
	e.clock.Set(now.Add(2 * time.Hour))
	e.waitEvents(rMissing, "opened:1", "renotified:1")
	e.waitEvents(rRejected, "opened:1", "renotified:1")

	e.exec(`UPDATE compliance_submissions SET data = '{"flow": 1}' WHERE id = $1`, missing)
	e.exec(`UPDATE compliance_submissions SET status = 'CONFIRMED', receipt = 'X1' WHERE id = $1`, rejected)
	e.waitEvents(rMissing, "opened:1", "renotified:1", "resolved:1")
	e.waitEvents(rRejected, "opened:1", "renotified:1", "resolved:1")
	types := map[string]bool{}
	for _, n := range e.notifications() {
		types[n.Type] = true
	}
	require.Equal(t, map[string]bool{"compliance_missing": true, "compliance_rejected": true}, types)
}

// slot inserts a compliance slot of point (and its source and config when
// needed) and returns its id.
func (e *env) slot(point string, at time.Time, status string, withData bool) int64 {
	e.t.Helper()
	ctx := context.Background()
	e.exec(`INSERT INTO compliance_sources (code, name, protocol, endpoint, time_zone, variables)
		VALUES ('test-src', 'Test', 'dga-mee', 'http://localhost', 'UTC', ARRAY['flow']) ON CONFLICT DO NOTHING`)
	var cfg int64
	err := e.pool.QueryRow(ctx, `SELECT id FROM compliance_configs WHERE point = $1`, point).Scan(&cfg)
	if err != nil {
		require.NoError(e.t, e.pool.QueryRow(ctx, `INSERT INTO compliance_configs (point, source, start_date)
			VALUES ($1, 'test-src', '2020-01-01') RETURNING id`, point).Scan(&cfg))
	}
	var data any
	if withData {
		data = `{"flow": 1}`
	}
	var id int64
	require.NoError(e.t, e.pool.QueryRow(ctx, `INSERT INTO compliance_submissions (config_id, point, source, slot_at,
			period_start, period_end, data, status)
		VALUES ($1, $2, 'test-src', $3::timestamptz, $3::timestamptz - interval '1 hour', $3::timestamptz, $4::jsonb, $5) RETURNING id`,
		cfg, point, at, data, status).Scan(&id))
	return id
}

// TestRuleChangedIntegration: a rule deleted after the stage cached it
// opens nothing (no foreign-key failure stalls the partition); the stage
// reads the rules again at once and judges with the new ones. (Otherwise
// rule changes take effect at the next evaluate_interval.)
func TestRuleChangedIntegration(t *testing.T) {
	e := newEnv(t)
	rOld := e.rule("P1", "flow", alerts.KindThresholdAbove, `{"limit": 10}`, time.Hour)
	cfg := testConfig()
	cfg.EvaluateInterval = config.Duration(time.Hour) // only the start and RuleChanged reload
	s := e.start(cfg)
	base := e.clock.Now()
	e.send(time.Time{}, reading("P1", "flow", base, 5, 0))
	e.consumed(s, 1)
	e.exec(`DELETE FROM alert_rules WHERE id = $1`, rOld)
	rNew := e.rule("P1", "flow", alerts.KindThresholdAbove, `{"limit": 100}`, time.Hour)
	e.send(time.Time{}, reading("P1", "flow", base.Add(time.Minute), 50, 0))
	e.consumed(s, 2)
	require.Zero(t, countRows(t, e, `SELECT count(*) FROM alerts`), "the deleted rule opened nothing")
	// Reloaded: the new rule is judged.
	time.Sleep(500 * time.Millisecond)
	e.send(time.Time{}, reading("P1", "flow", base.Add(2*time.Minute), 150, 0))
	e.consumed(s, 3)
	e.waitEvents(rNew, "opened:1")
}

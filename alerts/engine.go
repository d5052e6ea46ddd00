package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/schemas"
)

// This file holds what the alert stage does with the store: rules and
// unresolved alerts to cache, the alert lifecycle, and the outbox.

// ActiveRules returns every active rule whose params parse, ordered by id.
func (s *Store) ActiveRules(ctx context.Context) ([]Rule, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+ruleColumns+` FROM alert_rules WHERE active ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading active alert rules: %w", err)
	}
	rules, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Rule, error) { return scanRule(r) })
	if err != nil {
		return nil, fmt.Errorf("reading active alert rules: %w", err)
	}
	out := rules[:0]
	for _, r := range rules {
		if _, err := ParseParams(r.Kind, r.RawParams); err == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// UnresolvedAlerts returns every alert that is open or acknowledged.
func (s *Store) UnresolvedAlerts(ctx context.Context) ([]Alert, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+alertColumns+` FROM alerts WHERE state <> 'resolved' AND rule_id IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("reading unresolved alerts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Alert, error) { return scanAlert(r) })
	if err != nil {
		return nil, fmt.Errorf("reading unresolved alerts: %w", err)
	}
	return out, nil
}

// Observation is one judgement of a rule for one variable.
type Observation struct {
	// Firing says whether the rule's condition holds.
	Firing bool
	// Value is the value judged (the reading's, the gap in seconds, the
	// number of missing slots); nil when there is none.
	Value *float64
	// Unit is Value's unit, if any.
	Unit string
	// At is when the observation holds: the reading's event time, or the
	// evaluation time of time-based rules.
	At time.Time
	// Details are merged into the alert's details (a firing observation)
	// and stored with its event.
	Details map[string]any
}

// Outcome is what Observe did.
type Outcome struct {
	// Event is EventOpened, EventRenotified, EventResolved, or "" when the
	// observation only updated an open alert (or changed nothing).
	Event string
	// Alert is the alert after the observation; its ID is 0 when there is
	// none (not firing, nothing open).
	Alert Alert
	// RuleChanged is true when the rule was deleted, deactivated or changed
	// in kind, variable or params since the caller read it: nothing was
	// done, and the caller should read the rules again.
	RuleChanged bool
}

// Observe applies one observation of rule for variable ("" for point-wide
// alerts) at processing time now, in one transaction with the event it
// causes:
//   - firing, nothing unresolved: a new open alert, event opened;
//   - firing, open and renotify (the rule's, or the default passed) elapsed
//     since it was last notified: event renotified;
//   - firing otherwise: last_value, last_seen_at and details updated;
//   - not firing, unresolved (open or acknowledged): resolved, event
//     resolved;
//   - not firing, nothing unresolved: nothing.
//
// The unique index on unresolved alerts makes concurrent openings (another
// replica) collapse into one alert and one event. Events are written to
// the outbox (alert_events with produced_at NULL) for ProducePending.
func (s *Store) Observe(ctx context.Context, rule Rule, variable string, obs Observation, now time.Time, renotify time.Duration) (Outcome, error) {
	if rule.RenotifyInterval > 0 {
		renotify = rule.RenotifyInterval
	}
	details := map[string]any{}
	for k, v := range obs.Details {
		details[k] = v
	}
	if obs.Unit != "" {
		details["unit"] = obs.Unit
	}
	detailsJSON, err := json.Marshal(details)
	if err != nil {
		return Outcome{}, fmt.Errorf("encoding alert details: %w", err)
	}
	var value *float64
	if obs.Value != nil && !math.IsNaN(*obs.Value) && !math.IsInf(*obs.Value, 0) {
		value = obs.Value
	}
	at := obs.At
	if at.IsZero() {
		at = now
	}
	var out Outcome
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = Outcome{}
		// The rule as it is now, locked against deletion and change until
		// the alert is written: a judgement made with a stale copy of a
		// deleted or changed rule must not open an alert.
		var (
			active bool
			kind   Kind
			v      string
			params []byte
		)
		err := tx.QueryRow(ctx, `SELECT active, kind, coalesce(variable, ''), params FROM alert_rules WHERE id = $1 FOR KEY SHARE`,
			rule.ID).Scan(&active, &kind, &v, &params)
		changed := err == nil && (!active || kind != rule.Kind || v != rule.Variable || string(params) != string(rule.RawParams))
		if errors.Is(err, pgx.ErrNoRows) || changed {
			out.RuleChanged = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading alert rule %d: %w", rule.ID, err)
		}
		cur, err := scanAlert(tx.QueryRow(ctx, `SELECT `+alertColumns+` FROM alerts
			WHERE rule_id = $1 AND coalesce(variable, '') = $2 AND state <> 'resolved' FOR UPDATE`, rule.ID, variable))
		exists := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("reading the alert of rule %d: %w", rule.ID, err)
		}
		event, n := "", 1
		switch {
		case obs.Firing && !exists:
			cur, err = scanAlert(tx.QueryRow(ctx, `INSERT INTO alerts (rule_id, point, variable, kind, severity, opened_at,
					last_value, last_seen_at, last_notified_at, details)
				VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, $7, $8, $6, $9)
				ON CONFLICT (rule_id, coalesce(variable, '')) WHERE state <> 'resolved' DO NOTHING
				RETURNING `+alertColumns,
				rule.ID, rule.Point, variable, rule.Kind, rule.Severity, now, value, at, string(detailsJSON)))
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // opened meanwhile by another replica, with its event
			}
			if err != nil {
				return fmt.Errorf("opening an alert of rule %d: %w", rule.ID, err)
			}
			event = EventOpened
		case obs.Firing && cur.State == StateOpen && now.Sub(cur.LastNotifiedAt) >= renotify:
			cur, err = scanAlert(tx.QueryRow(ctx, `UPDATE alerts SET notify_count = notify_count + 1, last_notified_at = $2,
					last_value = $3, last_seen_at = $4, details = details || $5 WHERE id = $1 RETURNING `+alertColumns,
				cur.ID, now, value, at, string(detailsJSON)))
			if err != nil {
				return fmt.Errorf("renotifying alert %d: %w", cur.ID, err)
			}
			event, n = EventRenotified, cur.NotifyCount-1
		case obs.Firing:
			cur, err = scanAlert(tx.QueryRow(ctx, `UPDATE alerts SET last_value = $2, last_seen_at = greatest(last_seen_at, $3),
					details = details || $4 WHERE id = $1 RETURNING `+alertColumns, cur.ID, value, at, string(detailsJSON)))
			if err != nil {
				return fmt.Errorf("updating alert %d: %w", cur.ID, err)
			}
		case exists:
			cur, err = scanAlert(tx.QueryRow(ctx, `UPDATE alerts SET state = 'resolved', resolved_at = $2
				WHERE id = $1 RETURNING `+alertColumns, cur.ID, now))
			if err != nil {
				return fmt.Errorf("resolving alert %d: %w", cur.ID, err)
			}
			event = EventResolved
		default:
			return nil
		}
		out.Alert = cur
		if event == "" {
			return nil
		}
		out.Event = event
		_, err = tx.Exec(ctx, `INSERT INTO alert_events (alert_id, event, n, at, value, details) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (alert_id, event, n) DO NOTHING`, cur.ID, event, n, at, value, string(detailsJSON))
		if err != nil {
			return fmt.Errorf("recording event %s of alert %d: %w", event, cur.ID, err)
		}
		return nil
	})
	return out, err
}

// IsPermanent reports whether err is the database refusing a statement
// (a data exception, an integrity or syntax violation: SQLSTATE classes 22,
// 23 and 42) rather than being unreachable or busy: retrying cannot help.
func IsPermanent(err error) bool {
	code := pgCode(err)
	return strings.HasPrefix(code, "22") || strings.HasPrefix(code, "23") || strings.HasPrefix(code, "42")
}

// PendingEvent is an alert event not yet produced, with what its
// notifications need.
type PendingEvent struct {
	ID        int64
	AlertID   int64
	RuleID    int64
	Event     string
	N         int
	At        time.Time
	Value     *float64
	Details   map[string]any
	Point     string
	PointName string
	TimeZone  string
	Variable  string
	Kind      Kind
	Severity  string
}

// Recipient is a user subscribed to a point's notification type.
type Recipient struct {
	UserID   int64
	Language string
}

// ProduceFunc produces notifications and returns once Kafka acknowledged
// every one of them, or with the first error.
type ProduceFunc func(ctx context.Context, ns []schemas.Notification) error

// ProducePending produces the notifications of up to limit outbox events,
// oldest first, and marks them produced, in one transaction that holds the
// events' row locks (FOR UPDATE SKIP LOCKED: replicas share the outbox
// without producing an event twice at once). When produce fails nothing is
// marked and the events stay in the outbox; a crash after produce and
// before the commit produces them again, with the same ids. It returns the
// events marked and the notifications produced.
func (s *Store) ProducePending(ctx context.Context, limit int, produce ProduceFunc) (events, notifications int, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		events, notifications = 0, 0
		rows, err := tx.Query(ctx, `SELECT e.id, e.alert_id, coalesce(a.rule_id, 0), e.event, e.n, e.at, e.value, e.details,
				a.point, coalesce(p.name, a.point), coalesce(p.timezone, ''), coalesce(a.variable, ''), a.kind, a.severity
			FROM alert_events e JOIN alerts a ON a.id = e.alert_id LEFT JOIN catchment_points p ON p.code = a.point
			WHERE e.produced_at IS NULL ORDER BY e.id LIMIT $1 FOR UPDATE OF e SKIP LOCKED`, limit)
		if err != nil {
			return fmt.Errorf("reading the alert outbox: %w", err)
		}
		pending, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PendingEvent, error) {
			var e PendingEvent
			var details []byte
			err := r.Scan(&e.ID, &e.AlertID, &e.RuleID, &e.Event, &e.N, &e.At, &e.Value, &details, &e.Point, &e.PointName,
				&e.TimeZone, &e.Variable, &e.Kind, &e.Severity)
			if err == nil {
				err = json.Unmarshal(details, &e.Details)
			}
			return e, err
		})
		if err != nil {
			return fmt.Errorf("reading the alert outbox: %w", err)
		}
		if len(pending) == 0 {
			return nil
		}
		var all []schemas.Notification
		counts := make([]int, len(pending))
		recipients := map[string][]Recipient{}
		for i, e := range pending {
			typ := string(e.Kind.NotificationType())
			key := e.Point + "\x00" + typ
			rs, ok := recipients[key]
			if !ok {
				if rs, err = loadRecipients(ctx, tx, e.Point, typ); err != nil {
					return err
				}
				recipients[key] = rs
			}
			for _, r := range rs {
				all = append(all, e.Notification(r))
			}
			counts[i] = len(rs)
		}
		if len(all) > 0 {
			if err := produce(ctx, all); err != nil {
				return fmt.Errorf("producing %d notifications of %d alert events: %w", len(all), len(pending), err)
			}
		}
		for i, e := range pending {
			if _, err := tx.Exec(ctx, `UPDATE alert_events SET produced_at = now(), recipients = $2 WHERE id = $1`, e.ID, counts[i]); err != nil {
				return fmt.Errorf("marking alert event %d produced: %w", e.ID, err)
			}
		}
		events, notifications = len(pending), len(all)
		return nil
	})
	return events, notifications, err
}

// PendingCount returns how many alert events wait in the outbox.
func (s *Store) PendingCount(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM alert_events WHERE produced_at IS NULL`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting the alert outbox: %w", err)
	}
	return n, nil
}

// loadRecipients returns the active users with an active subscription to
// typ on point, by user id.
func loadRecipients(ctx context.Context, tx pgx.Tx, point, typ string) ([]Recipient, error) {
	rows, err := tx.Query(ctx, `SELECT n.user_id, n.language FROM point_notifications n JOIN users u ON u.id = n.user_id
		WHERE n.point = $1 AND n.active AND u.active AND $2 = ANY (n.notification_types) ORDER BY n.user_id`, point, typ)
	if err != nil {
		return nil, fmt.Errorf("reading the recipients of %s on %s: %w", typ, point, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Recipient])
	if err != nil {
		return nil, fmt.Errorf("reading the recipients of %s on %s: %w", typ, point, err)
	}
	return out, nil
}

// NotificationID is the deterministic id of the notification of one alert
// event for one user: "alert:<alert_id>:<event>:<n>:<user_id>". The user
// makes it unique per recipient, as the notify stage's idempotency key
// (notification id, channel) requires.
func NotificationID(alertID int64, event string, n int, userID int64) string {
	return fmt.Sprintf("alert:%d:%s:%d:%d", alertID, event, n, userID)
}

// Notification is e's notification for r: deterministic (id, content and
// created_at come from the stored event), so producing it again after a
// crash writes the same record.
func (e PendingEvent) Notification(r Recipient) schemas.Notification {
	point := e.Point
	data := map[string]string{
		"point_name": e.PointName, "time_zone": e.TimeZone, "alert_id": strconv.FormatInt(e.AlertID, 10),
		"rule_id": strconv.FormatInt(e.RuleID, 10), "state": e.Event, "kind": string(e.Kind),
		"at": e.At.UTC().Format(time.RFC3339), "n": strconv.Itoa(e.N), "language": r.Language,
	}
	if e.Variable != "" {
		data["variable"] = e.Variable
	}
	if e.Value != nil {
		data["value"] = strconv.FormatFloat(*e.Value, 'f', -1, 64)
	}
	for k, v := range e.Details {
		if _, taken := data[k]; taken {
			continue
		}
		switch v := v.(type) {
		case string:
			data[k] = v
		case nil:
		default:
			b, _ := json.Marshal(v)
			data[k] = string(b)
		}
	}
	return schemas.Notification{
		ID: NotificationID(e.AlertID, e.Event, e.N, r.UserID), UserID: strconv.FormatInt(r.UserID, 10), Point: &point,
		Type: string(e.Kind.NotificationType()), Severity: e.Severity,
		Title: e.title(), Body: e.body(data), Data: data, CreatedAt: e.At.UTC(),
	}
}

// what says in words what the alert is about.
func (e PendingEvent) what() string {
	v := e.Variable
	switch e.Kind {
	case KindThresholdAbove:
		return v + " above its limit"
	case KindThresholdBelow:
		return v + " below its limit"
	case KindRateOfChange:
		return v + " changing too fast"
	case KindDataGap:
		return "no " + v + " data"
	case KindStuck:
		return v + " sensor stuck"
	case KindTotalizerReset:
		return "totalizer reset"
	case KindComplianceMissing:
		return "compliance data missing"
	case KindComplianceRejected:
		return "compliance submission rejected"
	}
	return string(e.Kind)
}

func (e PendingEvent) title() string {
	word := map[string]string{EventOpened: "", EventRenotified: " (still)", EventResolved: " - resolved"}[e.Event]
	return fmt.Sprintf("[%s] %s: %s%s", e.Severity, e.PointName, e.what(), word)
}

func (e PendingEvent) body(data map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Alert %d (%s) on %s (%s) %s at %s.", e.AlertID, e.Kind, e.PointName, e.Point, e.Event, data["at"])
	if v, ok := data["value"]; ok {
		fmt.Fprintf(&b, " Value: %s %s.", v, data["unit"])
	}
	if lim, ok := data["limit"]; ok {
		fmt.Fprintf(&b, " Limit: %s %s.", lim, data["unit"])
	}
	return b.String()
}

// ErrNoComplianceTable is returned by ComplianceMissing and
// ComplianceRejected while compliance_submissions does not exist (a
// database migrated before it).
var ErrNoComplianceTable = errors.New("table compliance_submissions does not exist")

// ComplianceCount is how many of a point's compliance slots are in a
// condition, and the oldest slot instant among them.
type ComplianceCount struct {
	Count  int
	Oldest time.Time
}

func (s *Store) complianceCount(ctx context.Context, point, cond string, args ...any) (ComplianceCount, error) {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('compliance_submissions') IS NOT NULL`).Scan(&exists); err != nil {
		return ComplianceCount{}, fmt.Errorf("looking for compliance_submissions: %w", err)
	}
	if !exists {
		return ComplianceCount{}, ErrNoComplianceTable
	}
	var c ComplianceCount
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `SELECT count(*), min(slot_at) FROM compliance_submissions WHERE point = $1 AND `+cond,
		append([]any{point}, args...)...).Scan(&c.Count, &oldest)
	if err != nil {
		return ComplianceCount{}, fmt.Errorf("counting compliance slots of %s: %w", point, err)
	}
	if oldest != nil {
		c.Oldest = *oldest
	}
	return c, nil
}

// ComplianceMissing counts the point's slots still PENDING without data
// whose instant is before cutoff. ErrNoComplianceTable when the table does
// not exist.
func (s *Store) ComplianceMissing(ctx context.Context, point string, cutoff time.Time) (ComplianceCount, error) {
	return s.complianceCount(ctx, point, `status = 'PENDING' AND data IS NULL AND slot_at < $2`, cutoff)
}

// ComplianceRejected counts the point's slots REJECTED and last changed at
// or after since. ErrNoComplianceTable when the table does not exist.
func (s *Store) ComplianceRejected(ctx context.Context, point string, since time.Time) (ComplianceCount, error) {
	return s.complianceCount(ctx, point, `status = 'REJECTED' AND updated_at >= $2`, since)
}

// Sample is one stored reading's time, value and quality.
type Sample struct {
	Time    time.Time
	Value   float64
	Quality int32
}

// RecentReadings returns the stored readings of point and variable in
// [from, before), oldest first, at most 10000: what the stage replays to
// rebuild a series' state after a restart.
func (s *Store) RecentReadings(ctx context.Context, point, variable string, from, before time.Time) ([]Sample, error) {
	rows, err := s.pool.Query(ctx, `SELECT time, value, quality FROM (SELECT time, value, quality FROM readings
		WHERE point = $1 AND variable = $2 AND time >= $3 AND time < $4 ORDER BY time DESC LIMIT 10000) r ORDER BY time`,
		point, variable, from, before)
	if err != nil {
		return nil, fmt.Errorf("reading recent readings of %s/%s: %w", point, variable, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Sample])
	if err != nil {
		return nil, fmt.Errorf("reading recent readings of %s/%s: %w", point, variable, err)
	}
	return out, nil
}

// SeriesTime is the time of the latest stored reading of one series.
type SeriesTime struct {
	Point    string
	Variable string
	Time     time.Time
}

// LatestTimes returns, for each variable of each of points whose latest
// stored reading is at or after since, the time of that reading. It walks
// the readings primary key (point, variable, time) with a loose index scan,
// so it reads a few index entries per series whatever the table's size.
func (s *Store) LatestTimes(ctx context.Context, points []string, since time.Time) ([]SeriesTime, error) {
	rows, err := s.pool.Query(ctx, `WITH RECURSIVE vars AS (
			SELECT p.point, (SELECT min(r.variable) FROM readings r WHERE r.point = p.point) AS variable
			FROM unnest($1::text[]) AS p (point)
			UNION ALL
			SELECT v.point, (SELECT min(r.variable) FROM readings r WHERE r.point = v.point AND r.variable > v.variable)
			FROM vars v WHERE v.variable IS NOT NULL
		)
		SELECT point, variable, t FROM (
			SELECT v.point, v.variable,
				(SELECT max(r.time) FROM readings r WHERE r.point = v.point AND r.variable = v.variable) AS t
			FROM vars v WHERE v.variable IS NOT NULL
		) x WHERE t >= $2`, points, since)
	if err != nil {
		return nil, fmt.Errorf("reading the latest reading times: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[SeriesTime])
	if err != nil {
		return nil, fmt.Errorf("reading the latest reading times: %w", err)
	}
	return out, nil
}

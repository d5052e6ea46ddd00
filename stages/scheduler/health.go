package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/schemas"
)

// Finding is one thing health_check found wrong.
type Finding struct {
	// Kind is dependency, consumer_lag, stale_point or dlq_growth.
	Kind string `json:"kind"`
	// Severity is warning or critical.
	Severity string `json:"severity"`
	// Subject names what is wrong: a dependency, a consumer group, a point
	// code, a topic.
	Subject string `json:"subject"`
	// Message says what is wrong, in a sentence.
	Message string `json:"message"`
}

// Finding kinds.
const (
	KindDependency  = "dependency"
	KindConsumerLag = "consumer_lag"
	KindStalePoint  = "stale_point"
	KindDLQGrowth   = "dlq_growth"
)

// HealthCheck is the health_check job: every dependency (Dependencies),
// the consumer lag of every stage's group (Lags, above MaxLag), stale points
// (an active point with an active device and no reading for StaleAfter,
// or none ever), and dead-letter growth (DLQEndOffsets against the previous
// run's, kept in the run's details). Its findings become one notification
// of type "system" to every active admin user, id
// "health_check:<scheduled_for RFC 3339 UTC>:<user_id>"; no findings, no
// notification.
type HealthCheck struct {
	Pool     *pgxpool.Pool
	Notifier *Notifier
	// Dependencies checks PostgreSQL, Kafka, MQTT and the rest; it returns
	// only what is wrong. Optional.
	Dependencies func(ctx context.Context) []Finding
	// Lags returns each consumer group's total lag. Optional.
	Lags func(ctx context.Context) (map[string]int64, error)
	// DLQEndOffsets returns each dead-letter topic's summed end offsets.
	// Optional.
	DLQEndOffsets func(ctx context.Context) (map[string]int64, error)
	StaleAfter    time.Duration
	MaxLag        int64
	// Now is the clock; default time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// healthDetails is what a health_check run keeps in scheduler_runs.details.
type healthDetails struct {
	DLQEndOffsets map[string]int64 `json:"dlq_end_offsets,omitempty"`
	Findings      []Finding        `json:"findings"`
}

// Run checks, records the details and notifies the admins.
func (h *HealthCheck) Run(ctx context.Context, scheduledFor time.Time) error {
	findings, err := h.Check(ctx)
	if err != nil {
		return err
	}
	if len(findings) == 0 {
		return nil
	}
	ns, err := h.notifications(ctx, scheduledFor, findings)
	if err != nil {
		return err
	}
	if err := h.Notifier.Send(ctx, ns); err != nil {
		return err
	}
	if h.Log != nil {
		h.Log.Warn("health check found problems", "findings", len(findings), "admins_notified", len(ns))
	}
	return nil
}

// Check returns the findings and records the run's details (SetDetails).
// Only a database error reading points is an error; a dependency that
// cannot be asked is itself a finding.
func (h *HealthCheck) Check(ctx context.Context) ([]Finding, error) {
	var out []Finding
	if h.Dependencies != nil {
		out = append(out, h.Dependencies(ctx)...)
	}
	if h.Lags != nil {
		lags, err := h.Lags(ctx)
		if err != nil {
			out = append(out, Finding{Kind: KindDependency, Severity: "critical", Subject: "kafka",
				Message: "consumer lag could not be read: " + err.Error()})
		}
		groups := make([]string, 0, len(lags))
		for g := range lags {
			groups = append(groups, g)
		}
		sort.Strings(groups)
		for _, g := range groups {
			if lags[g] > h.MaxLag {
				out = append(out, Finding{Kind: KindConsumerLag, Severity: "warning", Subject: g,
					Message: fmt.Sprintf("consumer group %s is %d records behind (scheduler.max_lag %d)", g, lags[g], h.MaxLag)})
			}
		}
	}
	stale, err := h.stalePoints(ctx)
	if err != nil {
		return nil, err
	}
	out = append(out, stale...)
	details := healthDetails{}
	if h.DLQEndOffsets != nil {
		ends, err := h.DLQEndOffsets(ctx)
		if err != nil {
			out = append(out, Finding{Kind: KindDependency, Severity: "critical", Subject: "kafka",
				Message: "dead-letter offsets could not be read: " + err.Error()})
		} else {
			details.DLQEndOffsets = ends
			out = append(out, dlqGrowth(ctx, ends)...)
		}
	}
	details.Findings = out
	if details.Findings == nil {
		details.Findings = []Finding{}
	}
	SetDetails(ctx, details)
	return out, nil
}

// dlqGrowth compares the end offsets with the previous run's.
func dlqGrowth(ctx context.Context, ends map[string]int64) []Finding {
	info, ok := FromContext(ctx)
	if !ok || info.Previous == nil {
		return nil
	}
	var prev healthDetails
	if err := json.Unmarshal(info.Previous.Details, &prev); err != nil || prev.DLQEndOffsets == nil {
		return nil
	}
	topics := make([]string, 0, len(ends))
	for t := range ends {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	var out []Finding
	for _, t := range topics {
		before, had := prev.DLQEndOffsets[t]
		if grew := ends[t] - before; had && grew > 0 {
			out = append(out, Finding{Kind: KindDLQGrowth, Severity: "warning", Subject: t,
				Message: fmt.Sprintf("%d records were dead-lettered to %s since the check of %s", grew, t,
					info.Previous.ScheduledFor.UTC().Format(time.RFC3339))})
		}
	}
	return out
}

// stalePointsSQL finds each active point's newest reading the way the
// API's latest endpoint does: a loose index scan of the readings' primary
// key for the variables, one backward probe per variable.
const stalePointsSQL = `WITH RECURSIVE pts AS (
	SELECT p.code AS point, p.name FROM catchment_points p
	WHERE p.active AND EXISTS (SELECT 1 FROM devices d WHERE d.point = p.code AND d.active)
), s AS (
	SELECT pts.point, (SELECT min(r.variable) FROM readings r WHERE r.point = pts.point) AS variable FROM pts
	UNION ALL
	SELECT s.point, (SELECT min(r.variable) FROM readings r WHERE r.point = s.point AND r.variable > s.variable)
	FROM s WHERE s.variable IS NOT NULL
)
SELECT pts.point, pts.name, max(l.time) AS latest
FROM pts
LEFT JOIN s ON s.point = pts.point AND s.variable IS NOT NULL
LEFT JOIN LATERAL (SELECT r.time FROM readings r WHERE r.point = s.point AND r.variable = s.variable
	ORDER BY r.time DESC LIMIT 1) l ON true
GROUP BY pts.point, pts.name
HAVING max(l.time) IS NULL OR max(l.time) < @before
ORDER BY pts.point`

func (h *HealthCheck) stalePoints(ctx context.Context) ([]Finding, error) {
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	rows, err := h.Pool.Query(ctx, stalePointsSQL, pgx.NamedArgs{"before": now().Add(-h.StaleAfter)})
	if err != nil {
		return nil, fmt.Errorf("looking for stale points: %w", err)
	}
	var (
		out    []Finding
		point  string
		name   string
		latest *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&point, &name, &latest}, func() error {
		msg := fmt.Sprintf("point %s (%s) has never sent a reading", point, name)
		if latest != nil {
			msg = fmt.Sprintf("point %s (%s) has sent no reading since %s (scheduler.stale_after %s)",
				point, name, latest.UTC().Format(time.RFC3339), h.StaleAfter)
		}
		out = append(out, Finding{Kind: KindStalePoint, Severity: "warning", Subject: point, Message: msg})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("looking for stale points: %w", err)
	}
	return out, nil
}

// maxBodyFindings bounds the findings listed in a notification's body; all
// of them are in data["findings"].
const maxBodyFindings = 30

func (h *HealthCheck) notifications(ctx context.Context, scheduledFor time.Time, findings []Finding) ([]schemas.Notification, error) {
	rows, err := h.Pool.Query(ctx, `SELECT id FROM users WHERE role = 'admin' AND active ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading the administrators: %w", err)
	}
	admins, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("reading the administrators: %w", err)
	}
	if len(admins) == 0 {
		if h.Log != nil {
			h.Log.Warn("health check found problems but there is no active admin user to notify", "findings", len(findings))
		}
		return nil, nil
	}
	severity := "warning"
	counts := map[string]int{}
	for _, f := range findings {
		if f.Severity == "critical" {
			severity = "critical"
		}
		counts[f.Kind]++
	}
	var b strings.Builder
	for i, f := range findings {
		if i == maxBodyFindings {
			fmt.Fprintf(&b, "... and %d more\n", len(findings)-i)
			break
		}
		fmt.Fprintf(&b, "- [%s] %s\n", f.Severity, f.Message)
	}
	fj, _ := json.Marshal(findings)
	at := scheduledFor.UTC().Format(time.RFC3339)
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	data := map[string]string{"scheduled_for": at, "findings": string(fj), "count": strconv.Itoa(len(findings))}
	for k, n := range counts {
		data[k] = strconv.Itoa(n)
	}
	out := make([]schemas.Notification, 0, len(admins))
	for _, id := range admins {
		user := strconv.FormatInt(id, 10)
		d := make(map[string]string, len(data))
		for k, v := range data {
			d[k] = v
		}
		out = append(out, schemas.Notification{
			ID: "health_check:" + at + ":" + user, UserID: user, Type: "system", Severity: severity,
			Title:     fmt.Sprintf("Stack VPS health check: %d problem(s)", len(findings)),
			Body:      strings.TrimRight(b.String(), "\n"),
			Data:      d,
			CreatedAt: now().UTC(),
		})
	}
	return out, nil
}

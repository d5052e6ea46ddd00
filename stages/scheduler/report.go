package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/scheduler/schedule"
)

// DailyReport is the daily_report job: for the local day before its
// period (in Location), per user subscribed to daily_report and per point
// of the subscription, the compliance slots of that day confirmed,
// rejected, in error, pending and missing; one notification of type
// daily_report per user summarising all their points, with id
// "daily_report:<YYYY-MM-DD>:<user_id>".
//
// A slot is counted on the day its instant (slot_at) falls in. Missing:
// status MISSING (written off), or PENDING without data for longer than
// MissingAfter (the alert's definition); pending: the other PENDING and the
// SENT slots; error: ERROR.
type DailyReport struct {
	Pool     *pgxpool.Pool
	Notifier *Notifier
	// Location is the zone of the day reported (scheduler.time_zone).
	Location *time.Location
	// MissingAfter is submit.missing_after.
	MissingAfter time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// PointReport is one point's figures in a daily report.
type PointReport struct {
	Point     string `json:"point"`
	Name      string `json:"name"`
	Relation  string `json:"relation"`
	Confirmed int    `json:"confirmed"`
	Rejected  int    `json:"rejected"`
	Error     int    `json:"error"`
	Pending   int    `json:"pending"`
	Missing   int    `json:"missing"`
}

// Run builds the reports of the day before scheduledFor and produces them.
func (d *DailyReport) Run(ctx context.Context, scheduledFor time.Time) error {
	ns, err := d.Build(ctx, scheduledFor)
	if err != nil {
		return err
	}
	if err := d.Notifier.Send(ctx, ns); err != nil {
		return err
	}
	if d.Log != nil {
		d.Log.Info("daily report sent", "users", len(ns), "scheduled_for", scheduledFor.UTC().Format(time.RFC3339))
	}
	return nil
}

// ReportDay returns the local day a daily report of scheduledFor covers:
// its date and its bounds [start, end) (23, 24 or 25 hours long).
func ReportDay(scheduledFor time.Time, loc *time.Location) (date string, start, end time.Time) {
	y, m, dd := scheduledFor.In(loc).Date()
	py, pm, pd := time.Date(y, m, dd-1, 12, 0, 0, 0, time.UTC).Date()
	start = schedule.WallTime(py, pm, pd, 0, 0, loc)
	end = schedule.WallTime(y, m, dd, 0, 0, loc)
	return fmt.Sprintf("%04d-%02d-%02d", py, pm, pd), start, end
}

const dailyReportSQL = `SELECT pn.user_id, pn.point, coalesce(cp.name, pn.point), po.relation, pn.language,
	count(cs.id) FILTER (WHERE cs.status = 'CONFIRMED'),
	count(cs.id) FILTER (WHERE cs.status = 'REJECTED'),
	count(cs.id) FILTER (WHERE cs.status = 'ERROR'),
	count(cs.id) FILTER (WHERE cs.status IN ('PENDING', 'SENT')
		AND NOT (cs.status = 'PENDING' AND cs.data IS NULL AND cs.slot_at < @missing_before)),
	count(cs.id) FILTER (WHERE cs.status = 'MISSING'
		OR (cs.status = 'PENDING' AND cs.data IS NULL AND cs.slot_at < @missing_before))
FROM point_notifications pn
JOIN point_owners po ON po.point = pn.point AND po.user_id = pn.user_id
JOIN users u ON u.id = pn.user_id
LEFT JOIN catchment_points cp ON cp.code = pn.point
LEFT JOIN compliance_submissions cs ON cs.point = pn.point AND cs.slot_at >= @start AND cs.slot_at < @end
WHERE pn.active AND u.active AND 'daily_report' = ANY (pn.notification_types)
GROUP BY pn.user_id, pn.point, cp.name, po.relation, pn.language
ORDER BY pn.user_id, pn.point`

// Build returns the notifications of the report of scheduledFor, one per
// subscribed user, ordered by user id.
func (d *DailyReport) Build(ctx context.Context, scheduledFor time.Time) ([]schemas.Notification, error) {
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	date, start, end := ReportDay(scheduledFor, d.Location)
	rows, err := d.Pool.Query(ctx, dailyReportSQL, pgx.NamedArgs{
		"start": start, "end": end, "missing_before": now().Add(-d.MissingAfter)})
	if err != nil {
		return nil, fmt.Errorf("reading the daily report of %s: %w", date, err)
	}
	type userReport struct {
		id     int64
		lang   string
		points []PointReport
	}
	var users []*userReport
	var (
		uid      int64
		lang     string
		pr       PointReport
		c, r, e  int
		pend, mi int
	)
	_, err = pgx.ForEachRow(rows, []any{&uid, &pr.Point, &pr.Name, &pr.Relation, &lang, &c, &r, &e, &pend, &mi}, func() error {
		pr.Confirmed, pr.Rejected, pr.Error, pr.Pending, pr.Missing = c, r, e, pend, mi
		if len(users) == 0 || users[len(users)-1].id != uid {
			users = append(users, &userReport{id: uid, lang: lang})
		}
		u := users[len(users)-1]
		u.points = append(u.points, pr)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the daily report of %s: %w", date, err)
	}
	created := now().UTC()
	out := make([]schemas.Notification, 0, len(users))
	for _, u := range users {
		out = append(out, reportNotification(date, d.Location.String(), strconv.FormatInt(u.id, 10), u.lang, u.points, created))
	}
	return out, nil
}

func reportNotification(date, zone, user, lang string, points []PointReport, created time.Time) schemas.Notification {
	var tot PointReport
	for _, p := range points {
		tot.Confirmed += p.Confirmed
		tot.Rejected += p.Rejected
		tot.Error += p.Error
		tot.Pending += p.Pending
		tot.Missing += p.Missing
	}
	severity := "info"
	if tot.Rejected+tot.Error+tot.Missing > 0 {
		severity = "warning"
	}
	pj, _ := json.Marshal(points)
	var title string
	var b strings.Builder
	if lang == "en" {
		title = "Daily compliance report for " + date
		fmt.Fprintf(&b, "Compliance slots of %s (%s): %d confirmed, %d rejected, %d in error, %d pending, %d missing.\n",
			date, zone, tot.Confirmed, tot.Rejected, tot.Error, tot.Pending, tot.Missing)
		for _, p := range points {
			fmt.Fprintf(&b, "- %s (%s): %d confirmed, %d rejected, %d in error, %d pending, %d missing\n",
				p.Name, p.Point, p.Confirmed, p.Rejected, p.Error, p.Pending, p.Missing)
		}
	} else {
		title = "Reporte diario de cumplimiento del " + date
		fmt.Fprintf(&b, "Envíos de cumplimiento del %s (%s): %d confirmados, %d rechazados, %d con error, %d pendientes, %d faltantes.\n",
			date, zone, tot.Confirmed, tot.Rejected, tot.Error, tot.Pending, tot.Missing)
		for _, p := range points {
			fmt.Fprintf(&b, "- %s (%s): %d confirmados, %d rechazados, %d con error, %d pendientes, %d faltantes\n",
				p.Name, p.Point, p.Confirmed, p.Rejected, p.Error, p.Pending, p.Missing)
		}
	}
	return schemas.Notification{
		ID:       "daily_report:" + date + ":" + user,
		UserID:   user,
		Type:     "daily_report",
		Severity: severity,
		Title:    title,
		Body:     strings.TrimRight(b.String(), "\n"),
		Data: map[string]string{
			"date": date, "time_zone": zone, "points": string(pj), "point_count": strconv.Itoa(len(points)),
			"confirmed": strconv.Itoa(tot.Confirmed), "rejected": strconv.Itoa(tot.Rejected), "error": strconv.Itoa(tot.Error),
			"pending": strconv.Itoa(tot.Pending), "missing": strconv.Itoa(tot.Missing),
		},
		CreatedAt: created,
	}
}

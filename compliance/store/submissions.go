package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/compliance"
)

// Submission is one slot of one config (a row of compliance_submissions).
type Submission struct {
	ID       int64
	ConfigID int64
	Point    string
	Source   string
	// SlotAt is the instant reported; the period is [PeriodStart,
	// PeriodEnd), PeriodEnd == SlotAt.
	SlotAt      time.Time
	PeriodStart time.Time
	PeriodEnd   time.Time
	// Data are the values to report; nil when none arrived yet.
	Data        *compliance.Values
	DataVersion int
	// Correction is data of a higher version that arrived after the slot
	// was sent or confirmed (never sent automatically); nil when none.
	Correction        *compliance.Values
	CorrectionVersion int
	Status            string
	Receipt           string
	Reason            string
	HTTPStatus        int
	Response          string
	LastOutcome       string
	Attempts          int
	// Round is the resubmission round (0 for the first submission);
	// RoundAttempts the attempts made in it.
	Round         int
	RoundAttempts int
	NextAttemptAt *time.Time
	ConfirmedAt   *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
	// History is every attempt, oldest first, when asked for
	// (SubmissionFilter.WithAttempts, GetSubmission).
	History []Attempt

	data, correction []byte
}

// Attempt is one row of compliance_attempts.
type Attempt struct {
	ID           int64
	SubmissionID int64
	Attempt      int
	Round        int
	Kind         string
	StartedAt    time.Time
	FinishedAt   *time.Time
	// Request is the request as sent, secrets redacted ("****").
	Request    json.RawMessage
	HTTPStatus int
	Response   string
	DurationMS int64
	// Outcome is empty while the attempt is in flight.
	Outcome string
	Receipt string
	Error   string
}

func submissionColumns(p string) string {
	cols := []string{"id", "config_id", "point", "source", "slot_at", "period_start", "period_end", "data", "data_version",
		"correction", "coalesce(%scorrection_version, 0)", "status", "coalesce(%sreceipt, '')", "coalesce(%sreason, '')",
		"coalesce(%shttp_status, 0)", "coalesce(%sresponse, '')", "coalesce(%slast_outcome, '')", "attempts", "round",
		"(SELECT count(*) FROM compliance_attempts a WHERE a.submission_id = %sid AND a.round = %sround)",
		"next_attempt_at", "confirmed_at", "created_at", "updated_at"}
	for i, c := range cols {
		if strings.Contains(c, "%s") {
			cols[i] = strings.ReplaceAll(c, "%s", p)
		} else {
			cols[i] = p + c
		}
	}
	return strings.Join(cols, ", ")
}

func (s *Submission) scanDest() []any {
	return []any{&s.ID, &s.ConfigID, &s.Point, &s.Source, &s.SlotAt, &s.PeriodStart, &s.PeriodEnd, &s.data, &s.DataVersion,
		&s.correction, &s.CorrectionVersion, &s.Status, &s.Receipt, &s.Reason, &s.HTTPStatus, &s.Response, &s.LastOutcome,
		&s.Attempts, &s.Round, &s.RoundAttempts, &s.NextAttemptAt, &s.ConfirmedAt, &s.CreatedAt, &s.UpdatedAt}
}

func (s *Submission) decode() error {
	var err error
	if s.Data, err = decodeValues(s.data); err != nil {
		return err
	}
	if s.Correction, err = decodeValues(s.correction); err != nil {
		return err
	}
	s.data, s.correction = nil, nil
	s.SlotAt, s.PeriodStart, s.PeriodEnd = s.SlotAt.UTC(), s.PeriodStart.UTC(), s.PeriodEnd.UTC()
	return nil
}

func scanSubmission(r pgx.Row) (Submission, error) {
	var s Submission
	if err := r.Scan(s.scanDest()...); err != nil {
		return s, err
	}
	return s, s.decode()
}

// SubmissionFilter selects slots; zero fields select everything.
type SubmissionFilter struct {
	// Points restricts to these points when non-nil (an empty non-nil
	// slice selects nothing): the API passes the points the caller sees.
	Points   []string
	Point    string
	Source   string
	ConfigID int64
	// Statuses selects any of these statuses.
	Statuses []string
	// From and To select slot_at in [From, To).
	From, To time.Time
	// After is the cursor of the previous page (SubmissionPage.Next).
	After string
	// Limit caps the page. Default 100; at most 1000.
	Limit int
	// WithAttempts fills each submission's History.
	WithAttempts bool
}

// SubmissionPage is one page of ListSubmissions, newest slot first.
type SubmissionPage struct {
	Submissions []Submission
	// Next is the cursor of the next page; empty on the last one.
	Next string
}

func encodeCursor(s Submission) string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%d:%d", s.SlotAt.UnixMicro(), s.ID)))
}

func decodeCursor(c string) (time.Time, int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		us, id, ok := strings.Cut(string(b), ":")
		if ok {
			u, err1 := strconv.ParseInt(us, 10, 64)
			i, err2 := strconv.ParseInt(id, 10, 64)
			if err1 == nil && err2 == nil {
				return time.UnixMicro(u).UTC(), i, nil
			}
		}
	}
	return time.Time{}, 0, fmt.Errorf("%w: after: not a cursor this API returned", ErrInvalid)
}

// ListSubmissions returns one page of the slots matching f, newest slot
// first (slot_at, then id, descending), with keyset pagination.
func (s *Store) ListSubmissions(ctx context.Context, f SubmissionFilter) (SubmissionPage, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	if f.Points != nil {
		add("point = ANY ($?)", f.Points)
	}
	if f.Point != "" {
		add("point = $?", f.Point)
	}
	if f.Source != "" {
		add("source = $?", f.Source)
	}
	if f.ConfigID != 0 {
		add("config_id = $?", f.ConfigID)
	}
	if len(f.Statuses) > 0 {
		for _, st := range f.Statuses {
			if !isStatus(st) {
				return SubmissionPage{}, fmt.Errorf("%w: status %q: want one of %s", ErrInvalid, st, strings.Join(Statuses, ", "))
			}
		}
		add("status = ANY ($?)", f.Statuses)
	}
	if !f.From.IsZero() {
		add("slot_at >= $?", f.From)
	}
	if !f.To.IsZero() {
		add("slot_at < $?", f.To)
	}
	if f.After != "" {
		at, id, err := decodeCursor(f.After)
		if err != nil {
			return SubmissionPage{}, err
		}
		args = append(args, at, id)
		where = append(where, fmt.Sprintf("(slot_at, id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	sql := `SELECT ` + submissionColumns("s.") + ` FROM compliance_submissions s`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += fmt.Sprintf(" ORDER BY slot_at DESC, id DESC LIMIT %d", limit+1)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return SubmissionPage{}, fmt.Errorf("listing compliance submissions: %w", err)
	}
	subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Submission, error) { return scanSubmission(r) })
	if err != nil {
		return SubmissionPage{}, fmt.Errorf("listing compliance submissions: %w", err)
	}
	var page SubmissionPage
	if len(subs) > limit {
		subs = subs[:limit]
		page.Next = encodeCursor(subs[limit-1])
	}
	if f.WithAttempts && len(subs) > 0 {
		ids := make([]int64, len(subs))
		for i, sub := range subs {
			ids[i] = sub.ID
		}
		hist, err := attemptsOf(ctx, s.pool, ids)
		if err != nil {
			return SubmissionPage{}, err
		}
		for i := range subs {
			subs[i].History = hist[subs[i].ID]
		}
	}
	page.Submissions = subs
	return page, nil
}

func isStatus(s string) bool {
	for _, st := range Statuses {
		if s == st {
			return true
		}
	}
	return false
}

func attemptsOf(ctx context.Context, q querier, ids []int64) (map[int64][]Attempt, error) {
	rows, err := q.Query(ctx, `SELECT id, submission_id, attempt, round, kind, started_at, finished_at, request,
			coalesce(http_status, 0), coalesce(response, ''), coalesce(duration_ms, 0), coalesce(outcome, ''),
			coalesce(receipt, ''), coalesce(error, '')
		FROM compliance_attempts WHERE submission_id = ANY ($1) ORDER BY submission_id, attempt`, ids)
	if err != nil {
		return nil, fmt.Errorf("reading compliance attempts: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Attempt, error) {
		var a Attempt
		var req []byte
		err := r.Scan(&a.ID, &a.SubmissionID, &a.Attempt, &a.Round, &a.Kind, &a.StartedAt, &a.FinishedAt, &req,
			&a.HTTPStatus, &a.Response, &a.DurationMS, &a.Outcome, &a.Receipt, &a.Error)
		if req != nil {
			a.Request = req
		}
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading compliance attempts: %w", err)
	}
	out := map[int64][]Attempt{}
	for _, a := range list {
		out[a.SubmissionID] = append(out[a.SubmissionID], a)
	}
	return out, nil
}

// GetSubmission returns the slot with id with its attempts; ErrNotFound
// when there is none.
func (s *Store) GetSubmission(ctx context.Context, id int64) (Submission, error) {
	sub, err := scanSubmission(s.pool.QueryRow(ctx, `SELECT `+submissionColumns("s.")+` FROM compliance_submissions s WHERE s.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return sub, fmt.Errorf("compliance submission %d %w", id, ErrNotFound)
	}
	if err != nil {
		return sub, fmt.Errorf("reading compliance submission %d: %w", id, err)
	}
	hist, err := attemptsOf(ctx, s.pool, []int64{id})
	if err != nil {
		return sub, err
	}
	sub.History = hist[id]
	return sub, nil
}

// resubmissionAudit is a slot's state in the audit log.
type resubmissionAudit struct {
	ID          int64  `json:"id"`
	ConfigID    int64  `json:"config_id"`
	Source      string `json:"source"`
	SlotAt      string `json:"slot_at"`
	Status      string `json:"status"`
	Round       int    `json:"round"`
	Receipt     string `json:"receipt,omitempty"`
	Reason      string `json:"reason,omitempty"`
	DataVersion int    `json:"data_version"`
}

func (s Submission) audit() resubmissionAudit {
	return resubmissionAudit{ID: s.ID, ConfigID: s.ConfigID, Source: s.Source, SlotAt: s.SlotAt.Format(time.RFC3339),
		Status: s.Status, Round: s.Round, Receipt: s.Receipt, Reason: s.Reason, DataVersion: s.DataVersion}
}

// RequestResubmission moves a CONFIRMED, REJECTED or MISSING slot (or an
// ERROR one set aside for review) back to PENDING in a new round, which
// allows exactly one more confirmed submission; a correction that arrived
// after it was sent becomes its data. reason says why (audit). Audited in
// the same transaction. ErrConflict when the slot is not in one of those
// states or has no data; ErrNotFound when it does not exist. The store
// does not check permissions: the caller does (manage_compliance on the
// slot's point).
func (s *Store) RequestResubmission(ctx context.Context, actor Actor, id int64, reason string) (Submission, error) {
	var out Submission
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		before, err := scanSubmission(tx.QueryRow(ctx, `SELECT `+submissionColumns("s.")+` FROM compliance_submissions s
			WHERE s.id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("compliance submission %d %w", id, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("reading compliance submission %d: %w", id, err)
		}
		reviewable := before.Status == StatusError && before.NextAttemptAt == nil
		switch {
		case before.Status != StatusConfirmed && before.Status != StatusRejected && before.Status != StatusMissing && !reviewable:
			return nil, fmt.Errorf("%w: submission %d is %s; only CONFIRMED, REJECTED, MISSING or an ERROR set aside for review can be resubmitted",
				ErrConflict, id, before.Status)
		case before.Data == nil && before.Correction == nil:
			return nil, fmt.Errorf("%w: submission %d has no data to submit", ErrConflict, id)
		}
		out, err = scanSubmission(tx.QueryRow(ctx, `UPDATE compliance_submissions AS s SET status = 'PENDING', round = round + 1,
				data = CASE WHEN correction IS NOT NULL AND coalesce(correction_version, 0) > data_version THEN correction ELSE data END,
				data_version = CASE WHEN correction IS NOT NULL AND coalesce(correction_version, 0) > data_version THEN correction_version ELSE data_version END,
				correction = NULL, correction_version = NULL,
				receipt = NULL, reason = $2, next_attempt_at = NULL, updated_at = now()
			WHERE s.id = $1 RETURNING `+submissionColumns("s."), id, nullable("resubmission requested: "+reason)))
		if err != nil {
			return nil, fmt.Errorf("resubmitting compliance submission %d: %w", id, err)
		}
		return &audit.Entry{Action: "compliance_submission.resubmit", EntityType: "compliance_submission",
			EntityID: fmt.Sprint(id), Point: out.Point, Before: before.audit(), After: out.audit()}, nil
	})
	return out, err
}

// StatusCounts returns the number of slots per source and status (for the
// slots-by-status gauge) and, per source, the instant of the oldest slot
// not yet final (PENDING with data, SENT, ERROR with a next attempt).
func (s *Store) StatusCounts(ctx context.Context) (map[string]map[string]int, map[string]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT source, status, count(*),
			min(slot_at) FILTER (WHERE (status = 'PENDING' AND data IS NOT NULL) OR status = 'SENT'
				OR (status = 'ERROR' AND next_attempt_at IS NOT NULL))
		FROM compliance_submissions GROUP BY source, status`)
	if err != nil {
		return nil, nil, fmt.Errorf("counting slots by status: %w", err)
	}
	defer rows.Close()
	counts := map[string]map[string]int{}
	oldest := map[string]time.Time{}
	for rows.Next() {
		var src, st string
		var n int
		var o *time.Time
		if err := rows.Scan(&src, &st, &n, &o); err != nil {
			return nil, nil, fmt.Errorf("counting slots by status: %w", err)
		}
		if counts[src] == nil {
			counts[src] = map[string]int{}
		}
		counts[src][st] = n
		if o != nil && (oldest[src].IsZero() || o.Before(oldest[src])) {
			oldest[src] = *o
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("counting slots by status: %w", err)
	}
	return counts, oldest, nil
}

package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/audit"
)

// Errors of the store, besides accounts.ErrNotFound (a rule, an alert or a
// point that does not exist or the principal cannot see),
// accounts.ErrForbidden (it can see it but lacks manage_notifications) and
// accounts.ErrUnauthenticated; test with errors.Is.
var (
	// ErrInvalid: a rule field is invalid. The error is a *FieldError
	// naming the field.
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the change clashes with the current state
	// (acknowledging a resolved alert).
	ErrConflict = errors.New("conflict")
)

// Authorizer answers who may do what on a point; *accounts.Store.
type Authorizer interface {
	// Can returns nil when p holds perm on point, accounts.ErrNotFound
	// when p cannot read point, accounts.ErrForbidden when p can read it
	// but lacks perm.
	Can(ctx context.Context, p accounts.Principal, point string, perm accounts.Permission) error
	// VisiblePoints returns the points p can read.
	VisiblePoints(ctx context.Context, p accounts.Principal) ([]string, error)
}

// Store keeps alert rules and alerts in PostgreSQL: the audited changes the
// API makes on a principal's behalf, and the lifecycle and outbox the alert
// stage drives. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	auth Authorizer
}

// NewStore returns a store on pool (migrated). auth may be nil for a store
// used only by the alert stage; the principal-taking methods then fail.
func NewStore(pool *pgxpool.Pool, auth Authorizer) *Store {
	return &Store{pool: pool, auth: auth}
}

const ruleColumns = `id, point, coalesce(variable, ''), kind, params, severity,
	coalesce(extract(epoch FROM renotify_interval), 0)::float8, active, coalesce(created_by, 0), created_at, updated_at`

func scanRule(row pgx.Row) (Rule, error) {
	var r Rule
	var params []byte
	var renotify float64
	err := row.Scan(&r.ID, &r.Point, &r.Variable, &r.Kind, &params, &r.Severity, &renotify, &r.Active, &r.CreatedBy,
		&r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return r, err
	}
	r.RawParams = json.RawMessage(params)
	r.RenotifyInterval = time.Duration(renotify * float64(time.Second))
	// Stored params were validated when written; a kind whose parsing
	// changed since leaves Params zero, and the stage skips the rule.
	r.Params, _ = ParseParams(r.Kind, r.RawParams)
	return r, nil
}

const alertColumns = `id, coalesce(rule_id, 0), point, coalesce(variable, ''), kind, severity, state, opened_at,
	acknowledged_at, coalesce(acknowledged_by, 0), resolved_at, last_value, last_seen_at, last_notified_at,
	notify_count, details`

func scanAlert(row pgx.Row) (Alert, error) {
	var a Alert
	var details []byte
	err := row.Scan(&a.ID, &a.RuleID, &a.Point, &a.Variable, &a.Kind, &a.Severity, &a.State, &a.OpenedAt,
		&a.AcknowledgedAt, &a.AcknowledgedBy, &a.ResolvedAt, &a.LastValue, &a.LastSeenAt, &a.LastNotifiedAt,
		&a.NotifyCount, &details)
	a.Details = json.RawMessage(details)
	return a, err
}

// ruleAudit is a rule as audit_log records it.
type ruleAudit struct {
	Point            string          `json:"point"`
	Variable         string          `json:"variable,omitempty"`
	Kind             Kind            `json:"kind"`
	Params           json.RawMessage `json:"params"`
	Severity         string          `json:"severity"`
	RenotifyInterval string          `json:"renotify_interval,omitempty"`
	Active           bool            `json:"active"`
}

func (r Rule) audit() ruleAudit {
	a := ruleAudit{Point: r.Point, Variable: r.Variable, Kind: r.Kind, Params: r.RawParams, Severity: r.Severity, Active: r.Active}
	if r.RenotifyInterval > 0 {
		a.RenotifyInterval = r.RenotifyInterval.String()
	}
	return a
}

func (s *Store) authorizer() (Authorizer, error) {
	if s.auth == nil {
		return nil, errors.New("alerts: the store has no authorizer")
	}
	return s.auth, nil
}

// change runs fn in a transaction and records the audit entry it returns
// (nil: nothing to record) in the same transaction.
func (s *Store) change(ctx context.Context, p accounts.Principal, fn func(tx pgx.Tx) (*audit.Entry, error)) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		e, err := fn(tx)
		if err != nil || e == nil {
			return err
		}
		e.ActorUserID, e.Actor = p.UserID(), p.Actor()
		return audit.Record(ctx, tx, *e)
	})
}

func ruleNotFound(id int64) error { return fmt.Errorf("alert rule %d %w", id, accounts.ErrNotFound) }

func alertNotFound(id int64) error { return fmt.Errorf("alert %d %w", id, accounts.ErrNotFound) }

// check asks the authorizer for perm on point; a point p cannot read
// answers notFound, so nothing tells whether the rule or alert exists.
func (s *Store) check(ctx context.Context, p accounts.Principal, point string, perm accounts.Permission, notFound error) error {
	auth, err := s.authorizer()
	if err != nil {
		return err
	}
	err = auth.Can(ctx, p, point, perm)
	if errors.Is(err, accounts.ErrNotFound) {
		return notFound
	}
	return err
}

// Rules returns the rules of point (every point p can read when point is
// empty), ordered by point and id. Reading needs read on the point.
func (s *Store) Rules(ctx context.Context, p accounts.Principal, point string) ([]Rule, error) {
	points, err := s.visible(ctx, p, point)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+ruleColumns+` FROM alert_rules WHERE point = ANY ($1) ORDER BY point, id`, points)
	if err != nil {
		return nil, fmt.Errorf("reading alert rules: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Rule, error) { return scanRule(r) })
	if err != nil {
		return nil, fmt.Errorf("reading alert rules: %w", err)
	}
	return out, nil
}

// visible returns []string{point} after checking read on it, or every
// point p can read when point is empty.
func (s *Store) visible(ctx context.Context, p accounts.Principal, point string) ([]string, error) {
	auth, err := s.authorizer()
	if err != nil {
		return nil, err
	}
	if point != "" {
		if err := auth.Can(ctx, p, point, accounts.PermRead); err != nil {
			return nil, err
		}
		return []string{point}, nil
	}
	return auth.VisiblePoints(ctx, p)
}

// Rule returns one rule; accounts.ErrNotFound when it does not exist or p
// cannot read its point.
func (s *Store) Rule(ctx context.Context, p accounts.Principal, id int64) (Rule, error) {
	return s.readRule(ctx, s.pool, p, id, accounts.PermRead, "")
}

// rowQuerier is a pool or a transaction.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readRule reads rule id through q, with lock (" FOR UPDATE" in a
// transaction, or ""), and checks that p holds perm on its point: a rule
// that does not exist and one of a point p cannot read are both
// accounts.ErrNotFound.
func (s *Store) readRule(ctx context.Context, q rowQuerier, p accounts.Principal, id int64, perm accounts.Permission, lock string) (Rule, error) {
	r, err := scanRule(q.QueryRow(ctx, `SELECT `+ruleColumns+` FROM alert_rules WHERE id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Rule{}, ruleNotFound(id)
	}
	if err != nil {
		return Rule{}, fmt.Errorf("reading alert rule %d: %w", id, err)
	}
	if err := s.check(ctx, p, r.Point, perm, ruleNotFound(id)); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// CreateRule validates r (see Rule; ID, CreatedBy and the times are
// ignored) and stores it, audited as alert_rule.create. It needs
// manage_notifications on r.Point.
func (s *Store) CreateRule(ctx context.Context, p accounts.Principal, r Rule) (Rule, error) {
	if strings.TrimSpace(r.Point) == "" {
		return Rule{}, invalid("point", "required: the code of the point")
	}
	if err := s.check(ctx, p, r.Point, accounts.PermManageNotifications,
		fmt.Errorf("point %q %w", r.Point, accounts.ErrNotFound)); err != nil {
		return Rule{}, err
	}
	r, err := r.normalize()
	if err != nil {
		return Rule{}, err
	}
	var out Rule
	err = s.change(ctx, p, func(tx pgx.Tx) (*audit.Entry, error) {
		var err error
		out, err = scanRule(tx.QueryRow(ctx, `INSERT INTO alert_rules (point, variable, kind, params, severity,
				renotify_interval, active, created_by)
			VALUES ($1, NULLIF($2, ''), $3, $4, $5, NULLIF($6::float8, 0) * interval '1 second', $7, NULLIF($8::bigint, 0))
			RETURNING `+ruleColumns,
			r.Point, r.Variable, r.Kind, string(r.RawParams), r.Severity, r.RenotifyInterval.Seconds(), r.Active, p.UserID()))
		if err != nil {
			if pgCode(err) == "23503" {
				return nil, fmt.Errorf("point %q %w", r.Point, accounts.ErrNotFound)
			}
			return nil, fmt.Errorf("creating alert rule: %w", err)
		}
		return &audit.Entry{Action: "alert_rule.create", EntityType: "alert_rule", EntityID: strconv.FormatInt(out.ID, 10),
			Point: out.Point, After: out.audit()}, nil
	})
	return out, err
}

// UpdateRule reads rule id, lets apply change it (its point cannot
// change), validates and stores it, audited as alert_rule.update. It needs
// manage_notifications on the rule's point. A rule made inactive has its
// unresolved alerts resolved, without notification.
func (s *Store) UpdateRule(ctx context.Context, p accounts.Principal, id int64, apply func(*Rule) error) (Rule, error) {
	var out Rule
	err := s.change(ctx, p, func(tx pgx.Tx) (*audit.Entry, error) {
		before, err := s.readRule(ctx, tx, p, id, accounts.PermManageNotifications, " FOR UPDATE")
		if err != nil {
			return nil, err
		}
		r := before
		if err := apply(&r); err != nil {
			return nil, err
		}
		r.Point = before.Point
		if r, err = r.normalize(); err != nil {
			return nil, err
		}
		if r.audit().equal(before.audit()) {
			out = before
			return nil, nil
		}
		out, err = scanRule(tx.QueryRow(ctx, `UPDATE alert_rules SET variable = NULLIF($2, ''), kind = $3, params = $4,
				severity = $5, renotify_interval = NULLIF($6::float8, 0) * interval '1 second', active = $7, updated_at = now()
			WHERE id = $1 RETURNING `+ruleColumns,
			id, r.Variable, r.Kind, string(r.RawParams), r.Severity, r.RenotifyInterval.Seconds(), r.Active))
		if err != nil {
			return nil, fmt.Errorf("updating alert rule %d: %w", id, err)
		}
		if !out.Active || out.Kind != before.Kind || out.Variable != before.Variable {
			// What the open alerts say no longer holds.
			if err := resolveRuleAlerts(ctx, tx, id, "rule changed"); err != nil {
				return nil, err
			}
		}
		return &audit.Entry{Action: "alert_rule.update", EntityType: "alert_rule", EntityID: strconv.FormatInt(id, 10),
			Point: out.Point, Before: before.audit(), After: out.audit()}, nil
	})
	return out, err
}

func (a ruleAudit) equal(b ruleAudit) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// DeleteRule deletes rule id, audited as alert_rule.delete; its unresolved
// alerts are resolved without notification and keep their history. It
// needs manage_notifications on the rule's point.
func (s *Store) DeleteRule(ctx context.Context, p accounts.Principal, id int64) error {
	return s.change(ctx, p, func(tx pgx.Tx) (*audit.Entry, error) {
		before, err := s.readRule(ctx, tx, p, id, accounts.PermManageNotifications, " FOR UPDATE")
		if err != nil {
			return nil, err
		}
		if err := resolveRuleAlerts(ctx, tx, id, "rule deleted"); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM alert_rules WHERE id = $1`, id); err != nil {
			return nil, fmt.Errorf("deleting alert rule %d: %w", id, err)
		}
		return &audit.Entry{Action: "alert_rule.delete", EntityType: "alert_rule", EntityID: strconv.FormatInt(id, 10),
			Point: before.Point, Before: before.audit()}, nil
	})
}

// resolveRuleAlerts resolves the unresolved alerts of a rule, saying why
// in details.resolved_reason; no notification is sent for them.
func resolveRuleAlerts(ctx context.Context, tx pgx.Tx, ruleID int64, reason string) error {
	_, err := tx.Exec(ctx, `UPDATE alerts SET state = 'resolved', resolved_at = now(),
			details = details || jsonb_build_object('resolved_reason', $2::text)
		WHERE rule_id = $1 AND state <> 'resolved'`, ruleID, reason)
	if err != nil {
		return fmt.Errorf("resolving the alerts of rule %d: %w", ruleID, err)
	}
	return nil
}

// AlertFilter selects alerts; zero fields select everything.
type AlertFilter struct {
	// Point restricts to one point (which the principal must be able to
	// read); empty: every point it can read.
	Point string
	// State is open, acknowledged or resolved; "unresolved" selects open
	// and acknowledged.
	State string
	// BeforeID pages backwards: only alerts with id < BeforeID.
	BeforeID int64
	// Limit caps the alerts returned. Default 100; at most 1000.
	Limit int
}

// Alerts returns the alerts matching f on the points p can read, newest
// first.
func (s *Store) Alerts(ctx context.Context, p accounts.Principal, f AlertFilter) ([]Alert, error) {
	switch f.State {
	case "", StateOpen, StateAcknowledged, StateResolved, "unresolved":
	default:
		return nil, invalid("state", "must be open, acknowledged, resolved or unresolved; got %q", f.State)
	}
	points, err := s.visible(ctx, p, f.Point)
	if err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	rows, err := s.pool.Query(ctx, `SELECT `+alertColumns+` FROM alerts
		WHERE point = ANY ($1)
		  AND ($2 = '' OR state = $2 OR ($2 = 'unresolved' AND state <> 'resolved'))
		  AND ($3::bigint = 0 OR id < $3)
		ORDER BY id DESC LIMIT $4`, points, f.State, f.BeforeID, limit)
	if err != nil {
		return nil, fmt.Errorf("reading alerts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Alert, error) { return scanAlert(r) })
	if err != nil {
		return nil, fmt.Errorf("reading alerts: %w", err)
	}
	return out, nil
}

// Acknowledge marks alert id acknowledged by p, audited as
// alert.acknowledge: it is no longer re-notified, and it still resolves
// when its condition clears. Acknowledging an acknowledged alert changes
// nothing; a resolved one is ErrConflict. It needs manage_notifications on
// the alert's point.
func (s *Store) Acknowledge(ctx context.Context, p accounts.Principal, id int64) (Alert, error) {
	var out Alert
	err := s.change(ctx, p, func(tx pgx.Tx) (*audit.Entry, error) {
		before, err := scanAlert(tx.QueryRow(ctx, `SELECT `+alertColumns+` FROM alerts WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, alertNotFound(id)
		}
		if err != nil {
			return nil, fmt.Errorf("reading alert %d: %w", id, err)
		}
		if err := s.check(ctx, p, before.Point, accounts.PermManageNotifications, alertNotFound(id)); err != nil {
			return nil, err
		}
		switch before.State {
		case StateAcknowledged:
			out = before
			return nil, nil
		case StateResolved:
			return nil, fmt.Errorf("%w: alert %d is resolved", ErrConflict, id)
		}
		out, err = scanAlert(tx.QueryRow(ctx, `UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(),
				acknowledged_by = NULLIF($2::bigint, 0)
			WHERE id = $1 RETURNING `+alertColumns, id, p.UserID()))
		if err != nil {
			return nil, fmt.Errorf("acknowledging alert %d: %w", id, err)
		}
		return &audit.Entry{Action: "alert.acknowledge", EntityType: "alert", EntityID: strconv.FormatInt(id, 10),
			Point: out.Point, Before: map[string]string{"state": before.State}, After: map[string]string{"state": out.State}}, nil
	})
	return out, err
}

// pgCode returns err's SQLSTATE, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

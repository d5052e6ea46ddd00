package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Entry is one change to record.
type Entry struct {
	// ActorUserID is the user who made the change; 0 for the system or the
	// command line (the row's actor_user_id is then NULL).
	ActorUserID int64
	// Actor names the actor for humans: "user:<email>", "cli:<os user>",
	// "system:<component>". Required.
	Actor string
	// Action is "<entity>.<verb>", e.g. point.create, owner.grant,
	// token.revoke. Required.
	Action string
	// EntityType and EntityID identify what changed (e.g. "point", "P-12";
	// "point_owner", "P-12/7"). EntityType is required.
	EntityType string
	EntityID   string
	// Point is the catchment point the change concerns, if any, so a
	// point's whole history (devices, owners, notifications) is one query.
	Point string
	// Before and After are the entity's state, marshalled to JSON; nil when
	// it did not exist before or does not exist after. A json.RawMessage is
	// stored as it is.
	Before, After any
	// RequestID ties the row to an HTTP request; empty takes the one in ctx
	// (WithRequestID), if any.
	RequestID string
}

// Event is one row of audit_log.
type Event struct {
	ID          int64
	At          time.Time
	ActorUserID int64 // 0: the system or the command line
	Actor       string
	Action      string
	EntityType  string
	EntityID    string
	Point       string
	Before      json.RawMessage // nil when the entity did not exist before
	After       json.RawMessage // nil when it does not exist after
	RequestID   string
}

// ErrInvalid is returned by Record for an entry lacking a required field.
var ErrInvalid = errors.New("invalid audit entry")

type requestIDKey struct{}

// WithRequestID returns a context whose audit rows carry id as request_id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id set by WithRequestID, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// Record writes e in tx. It is meant to run in the transaction of the change
// it describes.
func Record(ctx context.Context, tx pgx.Tx, e Entry) error {
	if e.Actor == "" || e.EntityType == "" || !strings.Contains(e.Action, ".") {
		return fmt.Errorf("%w: actor, action (entity.verb) and entity type are required; got %q, %q, %q",
			ErrInvalid, e.Actor, e.Action, e.EntityType)
	}
	before, err := encode(e.Before)
	if err != nil {
		return fmt.Errorf("encoding the state before %s: %w", e.Action, err)
	}
	after, err := encode(e.After)
	if err != nil {
		return fmt.Errorf("encoding the state after %s: %w", e.Action, err)
	}
	reqID := e.RequestID
	if reqID == "" {
		reqID = RequestID(ctx)
	}
	_, err = tx.Exec(ctx, `INSERT INTO audit_log (actor_user_id, actor, action, entity_type, entity_id, point, before, after, request_id)
		VALUES (NULLIF($1::bigint, 0), $2, $3, $4, $5, NULLIF($6, ''), $7, $8, NULLIF($9, ''))`,
		e.ActorUserID, e.Actor, e.Action, e.EntityType, e.EntityID, e.Point, before, after, reqID)
	if err != nil {
		return fmt.Errorf("recording %s of %s %s: %w", e.Action, e.EntityType, e.EntityID, err)
	}
	return nil
}

// encode returns v as JSON text for a jsonb parameter, or nil for SQL NULL.
func encode(v any) (any, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if v == nil {
			return nil, nil
		}
		return string(v), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if string(b) == "null" {
		return nil, nil
	}
	return string(b), nil
}

// Filter selects audit rows; zero fields select everything.
type Filter struct {
	ActorUserID int64
	Action      string
	EntityType  string
	EntityID    string
	Point       string
	Since       time.Time // at >= Since
	Until       time.Time // at < Until
	// BeforeID pages backwards: only rows with id < BeforeID.
	BeforeID int64
	// Limit caps the rows returned. Default 100; at most 1000.
	Limit int
}

// Querier is what List reads from: a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// List returns the rows matching f, newest first.
func List(ctx context.Context, q Querier, f Filter) ([]Event, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.ActorUserID != 0 {
		add("actor_user_id = $%d", f.ActorUserID)
	}
	if f.Action != "" {
		add("action = $%d", f.Action)
	}
	if f.EntityType != "" {
		add("entity_type = $%d", f.EntityType)
	}
	if f.EntityID != "" {
		add("entity_id = $%d", f.EntityID)
	}
	if f.Point != "" {
		add("point = $%d", f.Point)
	}
	if !f.Since.IsZero() {
		add("at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("at < $%d", f.Until)
	}
	if f.BeforeID != 0 {
		add("id < $%d", f.BeforeID)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	sql := `SELECT id, at, coalesce(actor_user_id, 0), actor, action, entity_type, entity_id, coalesce(point, ''),
		before, after, coalesce(request_id, '') FROM audit_log`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += fmt.Sprintf(" ORDER BY id DESC LIMIT %d", limit)
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		var before, after []byte
		err := r.Scan(&e.ID, &e.At, &e.ActorUserID, &e.Actor, &e.Action, &e.EntityType, &e.EntityID, &e.Point,
			&before, &after, &e.RequestID)
		if before != nil {
			e.Before = json.RawMessage(before)
		}
		if after != nil {
			e.After = json.RawMessage(after)
		}
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	return out, nil
}

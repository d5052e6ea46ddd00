package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Inbox is the in-app inbox the notify stage fills (table inbox). Every
// method is scoped to one user: a message of another user is not found.
type Inbox interface {
	// List returns the user's messages newest first, only unread ones when
	// unread is set, with id below before (0: from the newest), at most
	// limit.
	List(ctx context.Context, userID int64, unread bool, before int64, limit int) ([]InboxMessage, error)
	// Unread counts the user's unread messages.
	Unread(ctx context.Context, userID int64) (int64, error)
	// MarkRead marks one message read (it stays read if it was) and
	// returns it; ErrInboxNotFound when the user has no such message.
	MarkRead(ctx context.Context, userID, id int64) (InboxMessage, error)
	// MarkAllRead marks every unread message of the user read and returns
	// how many it marked.
	MarkAllRead(ctx context.Context, userID int64) (int64, error)
}

// ErrInboxNotFound is returned by Inbox.MarkRead for a message the user
// does not have.
var ErrInboxNotFound = errors.New("inbox message not found")

// InboxMessage is one in-app message, as the API shows it.
type InboxMessage struct {
	ID             int64             `json:"id"`
	NotificationID string            `json:"notification_id"`
	Point          *string           `json:"point"`
	Type           string            `json:"type"`
	Severity       string            `json:"severity"`
	Title          string            `json:"title"`
	Body           string            `json:"body"`
	Data           map[string]string `json:"data"`
	CreatedAt      time.Time         `json:"created_at"`
	ReadAt         *time.Time        `json:"read_at"`
}

// Page sizes of the inbox.
const (
	inboxDefaultPage = 50
	inboxMaxPage     = 500
)

// inboxPage is the body of GET /api/notifications/.
type inboxPage struct {
	Next        *string        `json:"next"`
	NextCursor  *string        `json:"next_cursor"`
	UnreadCount int64          `json:"unread_count"`
	Results     []InboxMessage `json:"results"`
}

// inbox returns the inbox, or the 503 of an API started without one.
func (a *API) inbox() (Inbox, error) {
	if a.deps.Inbox == nil {
		return nil, &Error{Status: http.StatusServiceUnavailable,
			Message: "the in-app inbox is not available: this API runs without the notify component's inbox (query.Deps.Inbox)"}
	}
	return a.deps.Inbox, nil
}

// handleListInbox serves GET /api/notifications/: the caller's in-app
// messages, newest first, keyset-paginated.
func (a *API) handleListInbox(w http.ResponseWriter, r *http.Request) error {
	p, err := jsonParams(r, []string{"unread", "page_size", "cursor"})
	if err != nil {
		return err
	}
	in, err := a.inbox()
	if err != nil {
		return err
	}
	unread, err := boolParam(p, "unread")
	if err != nil {
		return err
	}
	size, err := pageSizeParam(p, inboxDefaultPage, inboxMaxPage)
	if err != nil {
		return err
	}
	var before int64
	if p.has("cursor") {
		if before, err = positiveInt("cursor", p.get("cursor"), "%s: not a cursor of this API; use next_cursor of the previous page"); err != nil {
			return err
		}
	}
	user := principal(r).UserID()
	msgs, err := in.List(r.Context(), user, unread, before, size+1)
	if err != nil {
		return err
	}
	count, err := in.Unread(r.Context(), user)
	if err != nil {
		return err
	}
	out := inboxPage{UnreadCount: count, Results: msgs}
	if len(msgs) > size {
		out.Results = msgs[:size]
		c := strconv.FormatInt(out.Results[size-1].ID, 10)
		v := url.Values{"cursor": {c}, "page_size": {strconv.Itoa(size)}}
		if p.has("unread") {
			v.Set("unread", strconv.FormatBool(unread))
		}
		next := r.URL.EscapedPath() + "?" + v.Encode()
		out.Next, out.NextCursor = &next, &c
	}
	if out.Results == nil {
		out.Results = []InboxMessage{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleReadInbox serves POST /api/notifications/{id}/read/.
func (a *API) handleReadInbox(w http.ResponseWriter, r *http.Request) error {
	raw, err := jsonCall(w, r, "id", nil)
	if err != nil {
		return err
	}
	in, err := a.inbox()
	if err != nil {
		return err
	}
	id, err := positiveInt("id", raw, "%s: want a message id")
	if err != nil {
		return err
	}
	m, err := in.MarkRead(r.Context(), principal(r).UserID(), id)
	if errors.Is(err, ErrInboxNotFound) {
		return &Error{Status: http.StatusNotFound, Param: "id", Message: fmt.Sprintf("no message %d in your inbox", id), Err: err}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

// handleReadAllInbox serves POST /api/notifications/read-all/.
func (a *API) handleReadAllInbox(w http.ResponseWriter, r *http.Request) error {
	if _, err := jsonCall(w, r, "", nil); err != nil {
		return err
	}
	in, err := a.inbox()
	if err != nil {
		return err
	}
	n, err := in.MarkAllRead(r.Context(), principal(r).UserID())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"marked": n})
	return nil
}

func inboxMessageSchema() obj {
	dt := func(desc string) obj { return obj{"type": "string", "format": "date-time", "description": desc} }
	return obj{"type": "object", "additionalProperties": false,
		"required": []string{"id", "notification_id", "point", "type", "severity", "title", "body", "data", "created_at", "read_at"},
		"properties": obj{
			"id":              obj{"type": "integer", "format": "int64", "description": "Message id."},
			"notification_id": str("The notification's idempotency key."),
			"point":           nullable(str("Point code; null for notifications about no point.")),
			"type":            str("Notification type (threshold, data_gap, ..., system)."),
			"severity":        str("info, warning or critical."),
			"title":           str("Title, in the user's language."),
			"body":            str("Text, in the user's language."),
			"data":            obj{"type": "object", "additionalProperties": obj{"type": "string"}, "description": "Structured details."},
			"created_at":      dt("When the notification was created."),
			"read_at":         nullable(dt("When it was marked read; null while unread.")),
		}}
}

var opListInbox = operation{
	id: "listInbox", tag: "users", summary: "The caller's in-app notifications",
	description: "The caller's own in-app messages, newest first. Pagination is by keyset: when more follow, " +
		"`next` and `next_cursor` give the next page. 503 when the API runs without the notify component.",
	params: []paramSpec{
		{name: "unread", in: "query", description: "true: only unread messages.", schema: obj{"type": "boolean"}},
		{name: "page_size", in: "query", description: fmt.Sprintf("Messages per page: 1 to %d; default %d.", inboxMaxPage, inboxDefaultPage),
			schema: obj{"type": "integer", "minimum": 1, "maximum": inboxMaxPage}},
		{name: "cursor", in: "query", description: "Where the page starts: next_cursor of the previous page.", schema: obj{"type": "string"}},
	},
	ok: 200, okDesc: "One page of messages.",
	okSchema: obj{"type": "object", "additionalProperties": false, "required": []string{"next", "next_cursor", "unread_count", "results"},
		"properties": obj{
			"next":         nullable(str("URL (path and query) of the next page; null on the last page.")),
			"next_cursor":  nullable(str("Cursor of the next page; null on the last page.")),
			"unread_count": obj{"type": "integer", "format": "int64", "description": "The caller's unread messages, all pages."},
			"results":      obj{"type": "array", "items": inboxMessageSchema()},
		}},
	errors: []int{400, 406, 503},
}

var opReadInbox = operation{
	id: "readInbox", tag: "users", summary: "Mark one in-app notification read",
	params: []paramSpec{{name: "id", in: "path", required: true, description: "Message id.",
		schema: obj{"type": "string", "pattern": "^[0-9]+$"}}},
	ok: 200, okDesc: "The message, read.", okSchema: inboxMessageSchema(),
	errors: []int{400, 404, 406, 503},
}

var opReadAllInbox = operation{
	id: "readAllInbox", tag: "users", summary: "Mark every in-app notification of the caller read",
	ok: 200, okDesc: "How many were marked.",
	okSchema: obj{"type": "object", "additionalProperties": false, "required": []string{"marked"},
		"properties": obj{"marked": obj{"type": "integer", "format": "int64"}}},
	errors: []int{400, 406, 503},
}

// InboxStore is the Inbox on the inbox table.
type InboxStore struct{ pool *pgxpool.Pool }

// NewInboxStore returns the inbox on pool.
func NewInboxStore(pool *pgxpool.Pool) *InboxStore { return &InboxStore{pool: pool} }

const inboxColumns = `id, notification_id, point, type, severity, title, body, data, created_at, read_at`

func scanInbox(row pgx.Row) (InboxMessage, error) {
	var m InboxMessage
	var data []byte
	if err := row.Scan(&m.ID, &m.NotificationID, &m.Point, &m.Type, &m.Severity, &m.Title, &m.Body, &data, &m.CreatedAt, &m.ReadAt); err != nil {
		return InboxMessage{}, err
	}
	m.Data = map[string]string{}
	if err := json.Unmarshal(data, &m.Data); err != nil {
		return InboxMessage{}, fmt.Errorf("decoding inbox data of message %d: %w", m.ID, err)
	}
	m.CreatedAt = m.CreatedAt.UTC()
	if m.ReadAt != nil {
		t := m.ReadAt.UTC()
		m.ReadAt = &t
	}
	return m, nil
}

// List implements Inbox.
func (s *InboxStore) List(ctx context.Context, userID int64, unread bool, before int64, limit int) ([]InboxMessage, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+inboxColumns+` FROM inbox
		WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) AND ($3 = 0 OR id < $3)
		ORDER BY id DESC LIMIT $4`, userID, unread, before, limit)
	if err != nil {
		return nil, fmt.Errorf("listing the inbox: %w", err)
	}
	defer rows.Close()
	var out []InboxMessage
	for rows.Next() {
		m, err := scanInbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing the inbox: %w", err)
	}
	return out, nil
}

// Unread implements Inbox.
func (s *InboxStore) Unread(ctx context.Context, userID int64) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM inbox WHERE user_id = $1 AND read_at IS NULL`, userID).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting unread messages: %w", err)
	}
	return n, nil
}

// MarkRead implements Inbox.
func (s *InboxStore) MarkRead(ctx context.Context, userID, id int64) (InboxMessage, error) {
	m, err := scanInbox(s.pool.QueryRow(ctx, `UPDATE inbox SET read_at = coalesce(read_at, now())
		WHERE id = $1 AND user_id = $2 RETURNING `+inboxColumns, id, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return InboxMessage{}, ErrInboxNotFound
	}
	if err != nil {
		return InboxMessage{}, fmt.Errorf("marking message %d read: %w", id, err)
	}
	return m, nil
}

// MarkAllRead implements Inbox.
func (s *InboxStore) MarkAllRead(ctx context.Context, userID int64) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE inbox SET read_at = now() WHERE user_id = $1 AND read_at IS NULL`, userID)
	if err != nil {
		return 0, fmt.Errorf("marking messages read: %w", err)
	}
	return tag.RowsAffected(), nil
}

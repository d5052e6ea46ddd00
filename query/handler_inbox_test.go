package query_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/query"
)

// withInbox gives the API the inbox on the fixture's database.
func withInbox() fixtureOption {
	return func(f *fixture, d *query.Deps) { d.Inbox = query.NewInboxStore(f.pool) }
}

// addInbox inserts n messages for the user of role, oldest first, and
// returns their ids.
func (f *fixture) addInbox(role string, n int) []int64 {
	f.t.Helper()
	var ids []int64
	for i := range n {
		var id int64
		err := f.pool.QueryRow(f.ctx, `INSERT INTO inbox (user_id, notification_id, point, type, severity, title, body, data, created_at)
			VALUES ($1, $2, $3, 'threshold', 'warning', $4, 'body', '{"variable": "flow"}', $5) RETURNING id`,
			f.users[role].ID, fmt.Sprintf("%s-%d", role, i), pointOwn, fmt.Sprintf("title %d", i),
			time.Date(2026, 3, 1, 0, i, 0, 0, time.UTC)).Scan(&id)
		require.NoError(f.t, err)
		ids = append(ids, id)
	}
	return ids
}

func TestInboxUnavailableWithoutNotify(t *testing.T) {
	f := newFixture(t)
	res := f.do(req{method: http.MethodGet, path: "/api/notifications/", token: f.tokens[rolePrimary]})
	require.Equal(t, http.StatusServiceUnavailable, res.status, "%s", res)
	require.Contains(t, res.json(t)["error"], "notify")
}

func TestInboxIntegration(t *testing.T) {
	f := newFixture(t, withInbox())
	mine := f.addInbox(rolePrimary, 5)
	theirs := f.addInbox(roleStranger, 2)
	tok := f.tokens[rolePrimary]

	// Keyset pages of 2, newest first, only the caller's messages.
	var seen []int64
	path := "/api/notifications/?page_size=2"
	for pages := 0; path != ""; pages++ {
		require.Less(t, pages, 5)
		res := f.do(req{method: http.MethodGet, path: path, token: tok})
		require.Equal(t, http.StatusOK, res.status, "%s", res)
		body := res.json(t)
		require.Equal(t, 5.0, body["unread_count"])
		for _, m := range body["results"].([]any) {
			msg := m.(map[string]any)
			seen = append(seen, int64(msg["id"].(float64)))
			require.Equal(t, pointOwn, msg["point"])
			require.Nil(t, msg["read_at"])
			require.Equal(t, "flow", msg["data"].(map[string]any)["variable"])
		}
		path = ""
		if next, ok := body["next"].(string); ok {
			path = next
		}
	}
	require.Equal(t, []int64{mine[4], mine[3], mine[2], mine[1], mine[0]}, seen)

	// Marking read: own message yes, another user's is not found.
	res := f.do(req{method: http.MethodPost, path: fmt.Sprintf("/api/notifications/%d/read/", mine[1]), token: tok})
	require.Equal(t, http.StatusOK, res.status, "%s", res)
	require.NotNil(t, res.json(t)["read_at"])
	res = f.do(req{method: http.MethodPost, path: fmt.Sprintf("/api/notifications/%d/read/", theirs[0]), token: tok})
	require.Equal(t, http.StatusNotFound, res.status, "%s", res)
	res = f.do(req{method: http.MethodPost, path: "/api/notifications/abc/read/", token: tok})
	require.Equal(t, http.StatusBadRequest, res.status, "%s", res)

	res = f.do(req{method: http.MethodGet, path: "/api/notifications/?unread=true", token: tok})
	require.Equal(t, http.StatusOK, res.status)
	body := res.json(t)
	require.Len(t, body["results"], 4)
	require.Equal(t, 4.0, body["unread_count"])

	res = f.do(req{method: http.MethodPost, path: "/api/notifications/read-all/", token: tok})
	require.Equal(t, http.StatusOK, res.status, "%s", res)
	require.Equal(t, 4.0, res.json(t)["marked"])
	res = f.do(req{method: http.MethodGet, path: "/api/notifications/?unread=true", token: tok})
	require.Empty(t, res.json(t)["results"])

	// The stranger's messages are untouched.
	res = f.do(req{method: http.MethodGet, path: "/api/notifications/?unread=true", token: f.tokens[roleStranger]})
	require.Len(t, res.json(t)["results"], 2)

	for _, bad := range []string{"?unread=maybe", "?page_size=0", "?cursor=x", "?other=1"} {
		res := f.do(req{method: http.MethodGet, path: "/api/notifications/" + bad, token: tok})
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", bad, res)
	}
	res = f.do(req{method: http.MethodGet, path: "/api/notifications/"})
	require.Equal(t, http.StatusUnauthorized, res.status)
}

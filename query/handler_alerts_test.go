package query_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/alerts"
	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/query"
)

// withAlerts serves the alert routes from an alerts.Store on the
// fixture's database.
func withAlerts() fixtureOption {
	return func(f *fixture, d *query.Deps) { d.Alerts = alerts.NewStore(f.pool, f.acc) }
}

// TestAlertsAPIIntegration covers the alert routes: validation naming the
// field, authorization (a point the caller cannot read is 404, read
// without manage_notifications is 403), audit, the alert list and
// acknowledgement, deletion, and that every answer matches the OpenAPI
// document.
func TestAlertsAPIIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withAlerts())
	doc := loadDoc(t, f.api.OpenAPI())
	check := func(rq req, res response) {
		t.Helper()
		path, _, _ := strings.Cut(rq.path, "?")
		schema := documentedSchema(t, doc, rq.method, path, res.status)
		if schema == nil {
			require.Empty(t, res.body)
			return
		}
		var v any
		require.NoError(t, json.Unmarshal(res.body, &v), "%s", res)
		require.NoError(t, schema.VisitJSON(v, openapi3.EnableFormatValidation()), "%s %s %d: %s", rq.method, rq.path, res.status, res)
	}
	call := func(role string, rq req, want int) response {
		t.Helper()
		res := f.as(role, rq)
		require.Equal(t, want, res.status, "%s %s as %s: %s", rq.method, rq.path, role, res)
		check(rq, res)
		return res
	}
	post := func(body any) req { return req{method: http.MethodPost, path: "/api/alerts/rules/", body: body} }

	// Validation: 400 naming the field.
	for _, c := range []struct {
		body  map[string]any
		param string
	}{
		{map[string]any{"kind": "threshold_above", "variable": "flow", "params": map[string]any{"limit": 1}}, "point"},
		{map[string]any{"point": pointOwn, "variable": "flow"}, "kind"},
		{map[string]any{"point": pointOwn, "kind": "bogus", "variable": "flow"}, "kind"},
		{map[string]any{"point": pointOwn, "kind": "threshold_above", "params": map[string]any{"limit": 1}}, "variable"},
		{map[string]any{"point": pointOwn, "kind": "threshold_above", "variable": "flow"}, "params.limit"},
		{map[string]any{"point": pointOwn, "kind": "threshold_above", "variable": "flow", "params": map[string]any{"limit": "x"}}, "params.limit"},
		{map[string]any{"point": pointOwn, "kind": "data_gap", "params": map[string]any{"after": "soon"}}, "params.after"},
		{map[string]any{"point": pointOwn, "kind": "stuck", "variable": "level", "params": map[string]any{"window": "1h", "bogus": 1}}, "params.bogus"},
		{map[string]any{"point": pointOwn, "kind": "compliance_missing", "variable": "flow"}, "variable"},
		{map[string]any{"point": pointOwn, "kind": "data_gap", "params": map[string]any{"after": "1h"}, "severity": "high"}, "severity"},
		{map[string]any{"point": pointOwn, "kind": "data_gap", "params": map[string]any{"after": "1h"}, "renotify_interval": "x"}, "renotify_interval"},
		{map[string]any{"point": pointOwn, "kind": "data_gap", "params": []int{1}}, "params"},
		{map[string]any{"point": pointOwn, "kind": "data_gap", "extra": 1}, "extra"},
	} {
		res := call(rolePrimary, post(c.body), http.StatusBadRequest)
		require.Equal(t, c.param, res.json(t)["param"], "%v: %s", c.body, res)
	}

	valid := map[string]any{"point": pointOwn, "kind": "threshold_above", "variable": "flow",
		"params": map[string]any{"limit": 12.5}, "severity": "critical", "renotify_interval": "2h"}
	// Authorization: a stranger does not see the point, a SECONDARY user
	// sees it without manage_notifications.
	call(roleStranger, post(valid), http.StatusNotFound)
	call(roleSecondary, post(valid), http.StatusForbidden)
	res := call(rolePrimary, post(valid), http.StatusCreated)
	rule := res.json(t)
	id := int64(rule["id"].(float64))
	require.Equal(t, fmt.Sprintf("/api/alerts/rules/%d/", id), res.header.Get("Location"))
	require.Equal(t, "2h0m0s", rule["renotify_interval"])
	require.Equal(t, float64(f.users[rolePrimary].ID), rule["created_by"])
	gap := call(roleAdministrator, post(map[string]any{"point": pointOwn, "kind": "data_gap", "params": map[string]any{"after": "15m"}}), http.StatusCreated).json(t)
	require.Nil(t, gap["variable"])
	require.Nil(t, gap["renotify_interval"])
	call(roleStranger, post(map[string]any{"point": pointForeign, "kind": "totalizer_reset"}), http.StatusCreated)

	rulePath := fmt.Sprintf("/api/alerts/rules/%d/", id)
	list := func(role, query string) []any {
		t.Helper()
		return call(role, req{method: http.MethodGet, path: "/api/alerts/rules/" + query}, http.StatusOK).json(t)["results"].([]any)
	}
	require.Len(t, list(roleSecondary, ""), 2)
	require.Len(t, list(roleSecondary, "?point="+pointOwn), 2)
	require.Len(t, list(roleStranger, ""), 1, "only the rules of points the caller can read")
	require.Len(t, list(roleAdmin, ""), 3)
	call(roleStranger, req{method: http.MethodGet, path: "/api/alerts/rules/?point=" + pointOwn}, http.StatusNotFound)
	call(roleStranger, req{method: http.MethodGet, path: rulePath}, http.StatusNotFound)
	call(roleSecondary, req{method: http.MethodGet, path: rulePath}, http.StatusOK)
	call(roleSecondary, req{method: http.MethodGet, path: "/api/alerts/rules/abc/"}, http.StatusBadRequest)
	call(roleSecondary, req{method: http.MethodGet, path: "/api/alerts/rules/999999/"}, http.StatusNotFound)

	// PATCH.
	patch := func(body any) req { return req{method: http.MethodPatch, path: rulePath, body: body} }
	call(roleStranger, patch(map[string]any{"active": false}), http.StatusNotFound)
	call(roleSecondary, patch(map[string]any{"active": false}), http.StatusForbidden)
	bad := call(rolePrimary, patch(map[string]any{"params": map[string]any{"limit": "x"}}), http.StatusBadRequest)
	require.Equal(t, "params.limit", bad.json(t)["param"])
	bad = call(rolePrimary, patch(map[string]any{"renotify_interval": "-1h"}), http.StatusBadRequest)
	require.Equal(t, "renotify_interval", bad.json(t)["param"])
	bad = call(rolePrimary, patch(map[string]any{"point": pointForeign}), http.StatusBadRequest)
	require.Equal(t, "point", bad.json(t)["param"])
	changed := call(rolePrimary, patch(map[string]any{"params": map[string]any{"limit": 20}, "renotify_interval": nil}), http.StatusOK).json(t)
	require.Equal(t, map[string]any{"limit": float64(20)}, changed["params"])
	require.Nil(t, changed["renotify_interval"])

	// Audited, with the actor.
	events, err := audit.List(f.ctx, f.pool, audit.Filter{EntityType: "alert_rule", EntityID: fmt.Sprint(id)})
	require.NoError(t, err)
	require.Len(t, events, 2)
	require.Equal(t, "alert_rule.update", events[0].Action)
	require.Equal(t, "alert_rule.create", events[1].Action)
	require.Equal(t, f.users[rolePrimary].ID, events[0].ActorUserID)
	require.Equal(t, pointOwn, events[0].Point)

	// Alerts: listed for readers, acknowledged with manage_notifications.
	var alertID int64
	require.NoError(t, f.pool.QueryRow(f.ctx, `INSERT INTO alerts (rule_id, point, variable, kind, severity, last_value, details)
		VALUES ($1, $2, 'flow', 'threshold_above', 'critical', 25, '{"limit": 20}') RETURNING id`, id, pointOwn).Scan(&alertID))
	alertList := func(role, query string) []any {
		t.Helper()
		return call(role, req{method: http.MethodGet, path: "/api/alerts/" + query}, http.StatusOK).json(t)["results"].([]any)
	}
	require.Len(t, alertList(roleSecondary, "?point="+pointOwn+"&state=open"), 1)
	require.Len(t, alertList(roleSecondary, "?state=resolved"), 0)
	require.Len(t, alertList(roleStranger, ""), 0)
	call(roleStranger, req{method: http.MethodGet, path: "/api/alerts/?point=" + pointOwn}, http.StatusNotFound)
	bad = call(roleSecondary, req{method: http.MethodGet, path: "/api/alerts/?state=closed"}, http.StatusBadRequest)
	require.Equal(t, "state", bad.json(t)["param"])
	ack := req{method: http.MethodPost, path: fmt.Sprintf("/api/alerts/%d/acknowledge/", alertID)}
	call(roleStranger, ack, http.StatusNotFound)
	call(roleSecondary, ack, http.StatusForbidden)
	acked := call(rolePrimary, ack, http.StatusOK).json(t)
	require.Equal(t, "acknowledged", acked["state"])
	require.Equal(t, float64(f.users[rolePrimary].ID), acked["acknowledged_by"])
	call(roleAdministrator, ack, http.StatusOK) // again: nothing changes
	events, err = audit.List(f.ctx, f.pool, audit.Filter{EntityType: "alert", EntityID: fmt.Sprint(alertID)})
	require.NoError(t, err)
	require.Len(t, events, 1)
	require.Equal(t, "alert.acknowledge", events[0].Action)

	// DELETE: the rule goes, its alert is resolved and stays.
	call(roleSecondary, req{method: http.MethodDelete, path: rulePath}, http.StatusForbidden)
	call(rolePrimary, req{method: http.MethodDelete, path: rulePath}, http.StatusNoContent)
	call(rolePrimary, req{method: http.MethodDelete, path: rulePath}, http.StatusNotFound)
	call(roleSecondary, req{method: http.MethodGet, path: rulePath}, http.StatusNotFound)
	resolved := alertList(roleSecondary, "?state=resolved")
	require.Len(t, resolved, 1)
	require.Nil(t, resolved[0].(map[string]any)["rule_id"])
	call(rolePrimary, ack, http.StatusConflict)
	events, err = audit.List(f.ctx, f.pool, audit.Filter{EntityType: "alert_rule", EntityID: fmt.Sprint(id)})
	require.NoError(t, err)
	require.Equal(t, "alert_rule.delete", events[0].Action)
}

// TestAlertsAPIWithoutStoreIntegration: without Deps.Alerts the routes say
// what is missing.
func TestAlertsAPIWithoutStoreIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, rq := range []req{
		{method: http.MethodGet, path: "/api/alerts/"},
		{method: http.MethodGet, path: "/api/alerts/rules/"},
		{method: http.MethodPost, path: "/api/alerts/1/acknowledge/"},
	} {
		res := f.as(rolePrimary, rq)
		require.Equal(t, http.StatusServiceUnavailable, res.status, "%s", res)
		require.Contains(t, res.json(t)["error"], "query.Deps.Alerts")
	}
}

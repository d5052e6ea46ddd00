package query_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/query"
)

// newOfflineAPI builds the API on a pool that never connects: enough to
// look at its routes and document.
func newOfflineAPI(t *testing.T) *query.API {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	api, err := query.New(query.Config{API: config.Default().API, RawTopic: "telemetry.raw"}, query.Deps{
		Pool: pool, Accounts: accounts.New(pool), Producer: &fakeProducer{}, Registerer: prometheus.NewRegistry(), Log: quietLog(),
	})
	require.NoError(t, err)
	return api
}

func loadDoc(t *testing.T, b []byte) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(b)
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()), "the document is valid OpenAPI 3")
	return doc
}

// TestOpenAPIDocument validates the document and checks that every route
// on the router is documented and every documented operation is routed.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	api := newOfflineAPI(t)
	doc := loadDoc(t, api.OpenAPI())
	require.Equal(t, "3.0.3", doc.OpenAPI)

	var routed []string
	require.NoError(t, chi.Walk(api.Routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed = append(routed, method+" /api"+route)
		return nil
	}))
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented = append(documented, method+" "+path)
			require.NotEmpty(t, op.OperationID, "%s %s", method, path)
			require.NotNil(t, op.Responses.Status(401), "%s %s documents 401", method, path)
			for code := range op.Responses.Map() {
				n, err := strconv.Atoi(code)
				require.NoError(t, err)
				if n >= 400 {
					require.NotNil(t, op.Responses.Status(n).Value.Content.Get(query.MediaJSON), "%s %s %d is a JSON error", method, path, n)
				}
			}
			for _, p := range op.Parameters {
				if p.Value.In == "path" {
					require.Contains(t, path, "{"+p.Value.Name+"}")
				}
			}
		}
	}
	slices.Sort(routed)
	slices.Sort(documented)
	require.Equal(t, documented, routed, "routes and documented operations are the same set")
	require.GreaterOrEqual(t, len(routed), 15)
	for _, contract := range []string{"/api/compliance/sources/", "/api/compliance/configs/", "/api/compliance/data/"} {
		require.NotNil(t, doc.Paths.Value(contract), "%s is a contract path (DESIGN.md)", contract)
	}
}

// documentedSchema returns the schema of a JSON response, failing when the
// status is not documented for the operation.
func documentedSchema(t *testing.T, doc *openapi3.T, method, path string, status int) *openapi3.Schema {
	t.Helper()
	var item *openapi3.PathItem
	for p, it := range doc.Paths.Map() {
		if matchTemplate(p, path) {
			item = it
		}
	}
	require.NotNil(t, item, "path %s is documented", path)
	op := item.GetOperation(method)
	require.NotNil(t, op, "%s %s is documented", method, path)
	resp := op.Responses.Status(status)
	require.NotNil(t, resp, "%s %s documents status %d", method, path, status)
	mt := resp.Value.Content.Get(query.MediaJSON)
	if mt == nil {
		return nil
	}
	return mt.Schema.Value
}

// matchTemplate matches a path against a documented template.
func matchTemplate(tmpl, path string) bool {
	ts, ps := strings.Split(tmpl, "/"), strings.Split(path, "/")
	if len(ts) != len(ps) {
		return false
	}
	for i := range ts {
		if !strings.HasPrefix(ts[i], "{") && ts[i] != ps[i] {
			return false
		}
	}
	return true
}

// TestResponsesMatchOpenAPIIntegration sends successful and failing
// requests to every route and validates each JSON answer against the
// schema the document gives for its status.
func TestResponsesMatchOpenAPIIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start := seedRaw(f)
	f.refreshRollups(start, start.Add(4*60*60*1e9))
	served := f.as(roleSecondary, req{method: http.MethodGet, path: "/api/openapi.json"})
	require.Equal(t, http.StatusOK, served.status)
	require.JSONEq(t, string(f.api.OpenAPI()), served.String())
	doc := loadDoc(t, served.body)

	from, to := start.Format("2006-01-02T15:04:05Z"), start.Add(3*60*60*1e9).Format("2006-01-02T15:04:05Z")
	cases := []struct {
		role string
		rq   req
	}{
		{roleAdmin, req{method: http.MethodGet, path: "/api/telemetry/data/?point=P-OWN&from=" + from + "&to=" + to + "&page_size=5"}},
		{roleAdmin, req{method: http.MethodGet, path: "/api/telemetry/data/?point=P-OWN&bucket=1h&from=" + from + "&to=" + to}},
		{roleAdmin, req{method: http.MethodGet, path: "/api/telemetry/data/?point=P-OWN&variable=ph&from=" + from + "&to=" + to}},
		{roleAdmin, req{method: http.MethodGet, path: "/api/telemetry/data/?point=P-OWN"}},
		{roleAdmin, req{method: http.MethodGet, path: "/api/telemetry/data/?point=P-OWN&from=" + from, header: map[string]string{"Accept": "application/xml"}}},
		{roleStranger, req{method: http.MethodGet, path: "/api/telemetry/data/?point=P-OWN&from=" + from + "&to=" + to}},
		{rolePrimary, req{method: http.MethodGet, path: "/api/telemetry/latest/"}},
		{rolePrimary, req{method: http.MethodGet, path: "/api/telemetry/latest/?point=P-NOPE"}},
		{rolePrimary, req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("{}")}},
		{roleSecondary, req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("{}")}},
		{rolePrimary, req{method: http.MethodGet, path: "/api/users/owners/?point=P-OWN"}},
		{rolePrimary, req{method: http.MethodPost, path: "/api/users/notifications/", body: map[string]any{"point": "P-OWN", "channels": []string{"sms"}, "phone": "+56912345678", "notification_types": []string{"data_gap"}}}},
		{rolePrimary, req{method: http.MethodPost, path: "/api/users/notifications/", body: map[string]any{"point": "P-OWN", "channels": []string{"sms"}}}},
		{rolePrimary, req{method: http.MethodGet, path: "/api/points/"}},
		{roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: map[string]any{"code": "P-NEW", "latitude": -33.4, "longitude": -70.6}}},
		{roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: map[string]any{"code": "P-NEW"}}},
		{roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: map[string]any{"code": "P-NEW2", "kind": "lake"}}},
		{rolePrimary, req{method: http.MethodGet, path: "/api/points/P-OWN/"}},
		{rolePrimary, req{method: http.MethodPatch, path: "/api/points/P-OWN/", body: map[string]any{"latitude": nil, "timezone": "America/Punta_Arenas"}}},
		{roleSecondary, req{method: http.MethodPatch, path: "/api/points/P-OWN/", body: map[string]any{"name": "x"}}},
		{roleAdmin, req{method: http.MethodDelete, path: "/api/points/P-NEW/"}},
		{roleAdmin, req{method: http.MethodDelete, path: "/api/points/P-OWN/"}},
		{rolePrimary, req{method: http.MethodGet, path: "/api/points/P-OWN/devices/"}},
		{rolePrimary, req{method: http.MethodPost, path: "/api/points/P-OWN/devices/", body: map[string]any{"id": "D-NEW"}}},
		{rolePrimary, req{method: http.MethodPatch, path: "/api/devices/D-NEW/", body: map[string]any{"provider": "generic-json"}}},
		{rolePrimary, req{method: http.MethodDelete, path: "/api/devices/D-NEW/"}},
		{rolePrimary, req{method: http.MethodDelete, path: "/api/devices/D-NEW/"}},
		{rolePrimary, req{method: http.MethodPut, path: "/api/points/P-OWN/"}},
	}
	seen := map[int]bool{}
	for _, c := range cases {
		res := f.as(c.role, c.rq)
		seen[res.status] = true
		path, _, _ := strings.Cut(c.rq.path, "?")
		if res.status == http.StatusMethodNotAllowed {
			require.Equal(t, "GET, PATCH, DELETE", res.header.Get("Allow"))
			continue
		}
		schema := documentedSchema(t, doc, c.rq.method, path, res.status)
		if schema == nil {
			require.Empty(t, res.body, "%s %s %d has no documented body", c.rq.method, c.rq.path, res.status)
			continue
		}
		var v any
		require.NoError(t, json.Unmarshal(res.body, &v), "%s", res)
		require.NoError(t, schema.VisitJSON(v, openapi3.EnableFormatValidation()), "%s %s %d: %s", c.rq.method, c.rq.path, res.status, res)
	}
	for _, code := range []int{200, 201, 202, 204, 400, 403, 404, 406, 409, 422} {
		require.True(t, seen[code], "a case answers %d", code)
	}
}

package query_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	cstore "github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/query"
)

// Secrets the compliance tests send; none may ever come back or be
// recorded in clear.
const (
	dgaPassword   = "Dga-Secret-Pass-1"
	dgaPassword2  = "Dga-Secret-Pass-2"
	smaPassword   = "Sma-Secret-Pass-3"
	leakyPassword = "leaky-recorded-secret"
)

var testSecrets = []string{dgaPassword, dgaPassword2, smaPassword, leakyPassword}

// complianceFixture is the API fixture with a compliance store whose
// sources are the built-ins.
type complianceFixture struct {
	*fixture
	store *cstore.Store
	logs  *testenv.SyncBuffer
	doc   *openapi3.T
	// bodies are every response body the test received.
	bodies []string
}

// withCompliance gives the API a compliance store on the fixture's
// database; sealed says whether it has a credentials key.
func withCompliance(t *testing.T, sealed bool, out **cstore.Store, logs *testenv.SyncBuffer) fixtureOption {
	return func(f *fixture, d *query.Deps) {
		var sealer *compliance.Sealer
		if sealed {
			key := make([]byte, 32)
			_, err := rand.Read(key)
			require.NoError(t, err)
			sealer, err = compliance.NewSealer(config.Secret(base64.StdEncoding.EncodeToString(key)))
			require.NoError(t, err)
		}
		st := cstore.New(f.pool, sealer)
		srcs, err := compliance.Sources(config.Default().Compliance)
		require.NoError(t, err)
		require.NoError(t, st.SyncSources(f.ctx, srcs))
		d.Compliance = st
		*out = st
		if logs != nil {
			d.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
}

func newComplianceFixture(t *testing.T, sealed bool) *complianceFixture {
	t.Helper()
	cf := &complianceFixture{logs: &testenv.SyncBuffer{}}
	cf.fixture = newFixture(t, withCompliance(t, sealed, &cf.store, cf.logs))
	cf.doc = loadDoc(t, cf.api.OpenAPI())
	return cf
}

// call sends rq as role, records the body, and checks the answer against
// the OpenAPI document: the status is documented for the operation and a
// JSON body matches its schema.
func (cf *complianceFixture) call(t *testing.T, role string, rq req, want int) response {
	t.Helper()
	res := cf.as(role, rq)
	cf.bodies = append(cf.bodies, string(res.body))
	require.Equal(t, want, res.status, "%s %s as %s: %s", rq.method, rq.path, role, res)
	path, _, _ := strings.Cut(rq.path, "?")
	schema := documentedSchema(t, cf.doc, rq.method, path, res.status)
	if schema != nil && strings.HasPrefix(res.header.Get("Content-Type"), query.MediaJSON) {
		var v any
		require.NoError(t, json.Unmarshal(res.body, &v), "%s", res)
		require.NoError(t, schema.VisitJSON(v, openapi3.EnableFormatValidation()), "%s %s %d: %s", rq.method, rq.path, res.status, res)
	}
	return res
}

// ids gets the list at path as role (200) and returns the ids of its
// results, in order.
func (cf *complianceFixture) ids(t *testing.T, role, path string) []int64 {
	t.Helper()
	res := cf.call(t, role, req{method: http.MethodGet, path: path}, http.StatusOK)
	var body struct {
		Results []struct {
			ID int64 `json:"id"`
		} `json:"results"`
	}
	require.NoError(t, json.Unmarshal(res.body, &body))
	ids := []int64{}
	for _, r := range body.Results {
		ids = append(ids, r.ID)
	}
	return ids
}

// requireParam checks a 400-class answer names param.
func requireParam(t *testing.T, res response, param, contains string) {
	t.Helper()
	body := res.json(t)
	require.Equal(t, param, body["param"], "%s", res)
	require.Contains(t, body["error"], contains, "%s", res)
}

func dgaConfig(start string) map[string]any {
	return map[string]any{
		"point": pointOwn, "source": compliance.SourceDGASubterraneas, "start_date": start,
		"config": map[string]any{"codigo_obra": "OB-0602-7", "rut_empresa": "76543210-3", "rut_usuario": "12345678-5",
			"standard": "mayor", "value_mode": "instant"},
		"credentials": map[string]any{"password": dgaPassword},
	}
}

func configID(t *testing.T, res response) int64 {
	t.Helper()
	return int64(res.json(t)["id"].(float64))
}

// seedSlots fills hourly slots of config id from start, n of them, with
// values, and returns them oldest first.
func (cf *complianceFixture) seedSlots(t *testing.T, configID int64, start time.Time, n int) []time.Time {
	t.Helper()
	var out []time.Time
	for i := range n {
		at := start.Add(time.Duration(i) * time.Hour)
		flow, tot := 10.5+float64(i), 1000.0+float64(i)
		_, err := cf.store.FillSlot(cf.ctx, configID, at, compliance.Values{Flow: &flow, Totalizer: &tot}, 1)
		require.NoError(t, err)
		out = append(out, at)
	}
	return out
}

// attempt records one attempt of the due slot at slotAt of source with
// outcome o, its request recorded as request.
func (cf *complianceFixture) attempt(t *testing.T, source string, slotAt time.Time, request string, o compliance.Outcome) int64 {
	t.Helper()
	now := time.Now()
	due, err := cf.store.DueSlots(cf.ctx, source, now, 1000)
	require.NoError(t, err)
	for _, d := range due {
		if !d.SlotAt.Equal(slotAt) {
			continue
		}
		b, err := cf.store.BeginAttempt(cf.ctx, d, cstore.KindSend, json.RawMessage(request), now, now.Add(time.Hour))
		require.NoError(t, err)
		_, err = cf.store.FinishAttempt(cf.ctx, d.ID, b, o, now, cstore.Policy{RetryRejectedAfter: 24 * time.Hour, MaxAttempts: 7,
			Backoff: func(int) time.Duration { return time.Minute }, UnknownAfter: time.Hour})
		require.NoError(t, err)
		return d.ID
	}
	t.Fatalf("no due slot at %s", slotAt)
	return 0
}

// requireNoSecrets checks that no response body, audit row or log line
// holds a credential.
func (cf *complianceFixture) requireNoSecrets(t *testing.T) {
	t.Helper()
	for _, b := range cf.bodies {
		for _, s := range testSecrets {
			require.NotContains(t, b, s, "a response body holds a credential")
		}
	}
	var audit []string
	rows, err := cf.pool.Query(cf.ctx, `SELECT coalesce(before::text, '') || ' ' || coalesce(after::text, '') FROM audit_log`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		audit = append(audit, s)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, audit)
	for _, a := range audit {
		for _, s := range testSecrets {
			require.NotContains(t, a, s, "an audit_log row holds a credential")
		}
	}
	logs := cf.logs.String()
	for _, s := range testSecrets {
		require.NotContains(t, logs, s, "the API logged a credential")
	}
}

// TestComplianceAPIIntegration drives every compliance route as every
// role: no access 404, read-only 403 on changes, owners and admins
// allowed; fields named in validation errors; credentials never shown,
// logged or audited.
func TestComplianceAPIIntegration(t *testing.T) {
	cf := newComplianceFixture(t, true)
	get := func(path string) req { return req{method: http.MethodGet, path: path} }
	post := func(path string, body any) req { return req{method: http.MethodPost, path: path, body: body} }
	patch := func(path string, body any) req { return req{method: http.MethodPatch, path: path, body: body} }

	// Sources: every authenticated user.
	res := cf.call(t, roleStranger, get("/api/compliance/sources/"), http.StatusOK)
	var sources struct {
		Results []map[string]any `json:"results"`
	}
	require.NoError(t, json.Unmarshal(res.body, &sources))
	codes := map[string]map[string]any{}
	for _, s := range sources.Results {
		codes[s["code"].(string)] = s
	}
	require.Contains(t, codes, compliance.SourceDGASubterraneas)
	require.Contains(t, codes, compliance.SourceDGAFlujometro)
	require.Contains(t, codes, compliance.SourceSMA)
	dga := codes[compliance.SourceDGASubterraneas]
	require.Equal(t, "dga-mee", dga["protocol"])
	require.Equal(t, "Etc/GMT+4", dga["time_zone"])
	require.ElementsMatch(t, []any{"flow", "totalizer", "level"}, dga["variables"])
	require.NotEmpty(t, dga["required_schema"].(map[string]any))
	require.Equal(t, true, dga["active"])
	require.Equal(t, http.StatusUnauthorized, cf.do(get("/api/compliance/sources/")).status)
	requireParam(t, cf.call(t, roleStranger, get("/api/compliance/sources/?x=1"), http.StatusBadRequest), "x", "unknown parameter")

	// Create: permission first (404 without access, 403 read-only).
	cf.call(t, roleStranger, post("/api/compliance/configs/", dgaConfig("2026-11-01")), http.StatusNotFound)
	requireParam(t, cf.call(t, roleSecondary, post("/api/compliance/configs/", dgaConfig("2026-11-01")), http.StatusForbidden), "point", "")
	cf.call(t, rolePrimary, post("/api/compliance/configs/", map[string]any{"point": "P-NOPE", "source": "sma", "config": map[string]any{}, "start_date": "2026-11-01"}), http.StatusNotFound)

	// Validation names the field.
	bad := func(mut func(m map[string]any), param, contains string) {
		t.Helper()
		body := dgaConfig("2026-11-01")
		mut(body)
		requireParam(t, cf.call(t, rolePrimary, post("/api/compliance/configs/", body), http.StatusBadRequest), param, contains)
	}
	bad(func(m map[string]any) { m["config"].(map[string]any)["codigo_obra"] = "0602-7" }, "config.codigo_obra", "config.codigo_obra: must look like OB-0602-7")
	bad(func(m map[string]any) { m["config"].(map[string]any)["rut_empresa"] = "76543210-9" }, "config.rut_empresa", "check digit")
	bad(func(m map[string]any) { delete(m["config"].(map[string]any), "rut_usuario") }, "config.rut_usuario", "required")
	bad(func(m map[string]any) { m["config"].(map[string]any)["value_mode"] = "max" }, "config.value_mode", "instant or mean")
	bad(func(m map[string]any) { m["config"].(map[string]any)["standard"] = "huge" }, "config.standard", "mayor")
	bad(func(m map[string]any) { m["config"].(map[string]any)["codigo_obra"] = 7 }, "config.codigo_obra", "want a string")
	bad(func(m map[string]any) { delete(m, "config") }, "config", "required")
	bad(func(m map[string]any) { delete(m, "start_date") }, "start_date", "required")
	bad(func(m map[string]any) { m["start_date"] = "01-11-2026" }, "start_date", "YYYY-MM-DD")
	bad(func(m map[string]any) { m["end_date"] = "2026-10-01" }, "end_date", "after start_date")
	bad(func(m map[string]any) { m["source"] = "dga-nope" }, "source", "unknown compliance source")
	bad(func(m map[string]any) { m["source"] = "" }, "source", "required")
	bad(func(m map[string]any) { m["credentials"] = map[string]any{"username": "u"} }, "credentials.password", "required")
	bad(func(m map[string]any) { m["extra"] = true }, "extra", "unknown field")
	sma := map[string]any{"point": pointOwn, "source": "sma", "start_date": "2026-11-01",
		"config":      map[string]any{"uf_id": "123", "proceso_id": "45", "dispositivo_id": "D9"},
		"credentials": map[string]any{"password": smaPassword}}
	requireParam(t, cf.call(t, rolePrimary, post("/api/compliance/configs/", sma), http.StatusBadRequest), "credentials.username", "required for sma")

	// Created, credentials write-only.
	res = cf.call(t, rolePrimary, post("/api/compliance/configs/", dgaConfig("2026-11-01")), http.StatusCreated)
	own := res.json(t)
	ownID := configID(t, res)
	require.Equal(t, fmt.Sprintf("/api/compliance/configs/%d/", ownID), res.header.Get("Location"))
	require.Equal(t, true, own["credentials_set"])
	require.NotContains(t, own, "credentials")
	require.Equal(t, "hourly", own["config"].(map[string]any)["frequency"], "normalized from the standard")
	require.Equal(t, true, own["active"])
	require.Nil(t, own["end_date"])
	requireParam(t, cf.call(t, roleAdministrator, post("/api/compliance/configs/", dgaConfig("2026-12-01")), http.StatusConflict),
		"point", "already reports to dga-subterraneas")
	sma["credentials"] = map[string]any{"username": "sma-user", "password": smaPassword}
	res = cf.call(t, roleAdministrator, post("/api/compliance/configs/", sma), http.StatusCreated)
	smaID := configID(t, res)
	foreign := dgaConfig("2026-11-01")
	foreign["point"] = pointForeign
	foreign["credentials"] = map[string]any{"password": dgaPassword2}
	res = cf.call(t, roleAdmin, post("/api/compliance/configs/", foreign), http.StatusCreated)
	foreignID := configID(t, res)

	// Read: only the points the caller can read.
	listIDs := func(role, query string) []int64 {
		t.Helper()
		return cf.ids(t, role, "/api/compliance/configs/"+query)
	}
	require.Equal(t, []int64{ownID, smaID}, listIDs(roleSecondary, ""))
	require.Equal(t, []int64{foreignID}, listIDs(roleStranger, ""))
	require.ElementsMatch(t, []int64{ownID, smaID, foreignID}, listIDs(roleAdmin, ""))
	require.Equal(t, []int64{smaID}, listIDs(rolePrimary, "?source=sma"))
	require.Equal(t, []int64{foreignID}, listIDs(roleAdmin, "?point=P-FOREIGN"))
	require.Empty(t, listIDs(rolePrimary, "?active=false"))
	cf.call(t, rolePrimary, get("/api/compliance/configs/?point=P-FOREIGN"), http.StatusNotFound)
	requireParam(t, cf.call(t, rolePrimary, get("/api/compliance/configs/?active=maybe"), http.StatusBadRequest), "active", "true or false")

	cf.call(t, roleSecondary, get(fmt.Sprintf("/api/compliance/configs/%d/", ownID)), http.StatusOK)
	requireParam(t, cf.call(t, roleStranger, get(fmt.Sprintf("/api/compliance/configs/%d/", ownID)), http.StatusNotFound), "id", "not found")
	notThere := cf.call(t, roleStranger, get("/api/compliance/configs/999999/"), http.StatusNotFound)
	require.Equal(t, strings.ReplaceAll(notThere.json(t)["error"].(string), "999999", fmt.Sprint(ownID)),
		cf.call(t, roleStranger, get(fmt.Sprintf("/api/compliance/configs/%d/", ownID)), http.StatusNotFound).json(t)["error"],
		"a config of a point the caller cannot read answers as one that does not exist")
	requireParam(t, cf.call(t, rolePrimary, get("/api/compliance/configs/abc/"), http.StatusBadRequest), "id", "config id")

	// Update: 404 without access, 403 read-only; params merge; the
	// credentials are replaced or removed, never shown.
	path := fmt.Sprintf("/api/compliance/configs/%d/", ownID)
	cf.call(t, roleStranger, patch(path, map[string]any{"end_date": "2027-01-01"}), http.StatusNotFound)
	cf.call(t, roleSecondary, patch(path, map[string]any{"end_date": "2027-01-01"}), http.StatusForbidden)
	requireParam(t, cf.call(t, rolePrimary, patch(path, map[string]any{"config": map[string]any{"rut_usuario": "12345678-0"}}), http.StatusBadRequest),
		"config.rut_usuario", "check digit")
	requireParam(t, cf.call(t, rolePrimary, patch(path, map[string]any{"config": map[string]any{"nope": "x"}}), http.StatusBadRequest),
		"config.nope", "unknown field")
	requireParam(t, cf.call(t, rolePrimary, patch(path, map[string]any{"end_date": "soon"}), http.StatusBadRequest), "end_date", "YYYY-MM-DD")
	requireParam(t, cf.call(t, rolePrimary, patch(path, map[string]any{"end_date": "2026-10-01"}), http.StatusBadRequest), "end_date", "after start_date")
	requireParam(t, cf.call(t, rolePrimary, patch(path, map[string]any{"start_date": "2026-10-01"}), http.StatusBadRequest), "start_date", "unknown field")
	res = cf.call(t, roleAdministrator, patch(path, map[string]any{"config": map[string]any{"value_mode": "mean"},
		"credentials": map[string]any{"password": dgaPassword2}, "end_date": "2027-01-01"}), http.StatusOK)
	upd := res.json(t)
	require.Equal(t, "mean", upd["config"].(map[string]any)["value_mode"])
	require.Equal(t, "OB-0602-7", upd["config"].(map[string]any)["codigo_obra"], "params not named stay")
	require.Equal(t, "2027-01-01", upd["end_date"])
	require.Equal(t, true, upd["credentials_set"])
	res = cf.call(t, rolePrimary, patch(path, map[string]any{"credentials": nil, "end_date": nil}), http.StatusOK)
	require.Equal(t, false, res.json(t)["credentials_set"])
	require.Nil(t, res.json(t)["end_date"])
	res = cf.call(t, rolePrimary, patch(path, map[string]any{"credentials": map[string]any{"password": dgaPassword}}), http.StatusOK)
	require.Equal(t, true, res.json(t)["credentials_set"])

	// End: audited, keeps history; no DELETE.
	endPath := fmt.Sprintf("/api/compliance/configs/%d/end/", smaID)
	cf.call(t, roleStranger, post(endPath, map[string]any{"end_date": "2026-11-20"}), http.StatusNotFound)
	cf.call(t, roleSecondary, post(endPath, map[string]any{"end_date": "2026-11-20"}), http.StatusForbidden)
	requireParam(t, cf.call(t, rolePrimary, post(endPath, map[string]any{}), http.StatusBadRequest), "end_date", "required")
	res = cf.call(t, rolePrimary, post(endPath, map[string]any{"end_date": "2026-11-20"}), http.StatusOK)
	require.Equal(t, "2026-11-20", res.json(t)["end_date"])
	require.Equal(t, false, res.json(t)["active"])
	endAudit := cf.auditRows(res.header.Get("X-Request-Id"))
	require.Len(t, endAudit, 1)
	require.Equal(t, "compliance_config.update", endAudit[0].Action)
	require.Equal(t, cf.users[rolePrimary].ID, endAudit[0].ActorUserID)
	require.Equal(t, []int64{smaID}, listIDs(rolePrimary, "?active=false"))
	require.Equal(t, []int64{ownID}, listIDs(rolePrimary, "?active=true"))
	require.Equal(t, http.StatusMethodNotAllowed, cf.as(roleAdmin, req{method: http.MethodDelete, path: path}).status)

	// Slots: 5 of the own config (DGA local midnight is 04:00 UTC), 2 of
	// the foreign one.
	start := time.Date(2026, 11, 2, 4, 0, 0, 0, time.UTC)
	ownSlots := cf.seedSlots(t, ownID, start, 5)
	cf.seedSlots(t, foreignID, start, 2)
	recorded := `{"autenticacion":{"password":"****","rutEmpresa":"76543210-3","rutUsuario":"12345678-5"},` +
		`"medicionSubterranea":{"caudal":"10.50","totalizador":"1000"},"extra":{"Password":"` + leakyPassword + `"}}`
	confirmedID := cf.attempt(t, compliance.SourceDGASubterraneas, ownSlots[0], recorded, compliance.Outcome{
		Kind: compliance.Confirmed, Receipt: "RCPT-1", HTTPStatus: 200, Response: []byte(`{"status":"00","data":{"numeroComprobante":"RCPT-1"}}`),
		Duration: 120 * time.Millisecond})
	rejectedID := cf.attempt(t, compliance.SourceDGASubterraneas, ownSlots[1], recorded, compliance.Outcome{
		Kind: compliance.RejectedTerminal, Reason: "Usuario no es el informante", HTTPStatus: 400,
		Response: []byte(`{"status":"01","message":"Usuario no es el informante registrado en la Obra"}`)})

	// Pagination: newest first, pages of 2, every own slot once.
	var seen []int64
	var statuses []string
	next := "/api/compliance/data/?page_size=2"
	for pages := 0; next != ""; pages++ {
		require.Less(t, pages, 5)
		res := cf.call(t, rolePrimary, get(next), http.StatusOK)
		var page struct {
			Next    *string          `json:"next"`
			Cursor  *string          `json:"next_cursor"`
			Results []map[string]any `json:"results"`
		}
		require.NoError(t, json.Unmarshal(res.body, &page))
		next = ""
		if page.Next != nil {
			next = *page.Next
			require.Contains(t, res.header.Get("Link"), *page.Cursor)
			require.Len(t, page.Results, 2)
		}
		for _, r := range page.Results {
			require.Equal(t, pointOwn, r["point"])
			seen = append(seen, int64(r["id"].(float64)))
			statuses = append(statuses, r["status"].(string))
			if int64(r["id"].(float64)) == confirmedID {
				require.Equal(t, "RCPT-1", r["receipt"])
				atts := r["attempts"].([]any)
				require.Len(t, atts, 1)
				at := atts[0].(map[string]any)
				require.Equal(t, "confirmed", at["outcome"])
				require.Equal(t, 200.0, at["http_status"])
				require.Equal(t, 120.0, at["duration_ms"])
				require.Equal(t, "RCPT-1", at["receipt"])
				require.Contains(t, at["response"], "numeroComprobante")
				rq := at["request"].(map[string]any)
				require.Equal(t, "****", rq["autenticacion"].(map[string]any)["password"])
				require.Equal(t, "****", rq["extra"].(map[string]any)["Password"], "a secret recorded by mistake is redacted on the way out")
			}
		}
	}
	require.Len(t, seen, 5)
	require.Equal(t, confirmedID, seen[4], "newest first")
	require.Equal(t, rejectedID, seen[3])
	require.Equal(t, []string{"PENDING", "PENDING", "PENDING", "REJECTED", "CONFIRMED"}, statuses)

	slotIDs := func(role, query string) []int64 {
		t.Helper()
		return cf.ids(t, role, "/api/compliance/data/"+query)
	}
	require.Len(t, slotIDs(roleStranger, ""), 2, "only the stranger's point")
	require.Len(t, slotIDs(roleAdmin, ""), 7)
	require.Len(t, slotIDs(roleAdmin, "?point=P-OWN&point=P-FOREIGN"), 7)
	require.Equal(t, []int64{confirmedID}, slotIDs(roleSecondary, "?status=CONFIRMED"))
	require.ElementsMatch(t, []int64{confirmedID, rejectedID}, slotIDs(roleSecondary, "?status=confirmed&status=REJECTED"))
	require.Len(t, slotIDs(roleSecondary, "?source=sma"), 0)
	require.Len(t, slotIDs(roleSecondary, "?from=2026-11-02T05:00:00Z&to=2026-11-02T07:00:00Z"), 2)
	require.Equal(t, []int64{confirmedID}, slotIDs(roleSecondary, "?to=2026-11-02T05:00:00Z"))
	cf.call(t, roleStranger, get("/api/compliance/data/?point=P-OWN"), http.StatusNotFound)
	requireParam(t, cf.call(t, rolePrimary, get("/api/compliance/data/?status=DONE"), http.StatusBadRequest), "status", "PENDING")
	requireParam(t, cf.call(t, rolePrimary, get("/api/compliance/data/?from=yesterday"), http.StatusBadRequest), "from", "RFC 3339")
	requireParam(t, cf.call(t, rolePrimary, get("/api/compliance/data/?from=2026-11-03T00:00:00Z&to=2026-11-02T00:00:00Z"), http.StatusBadRequest), "to", "after from")
	requireParam(t, cf.call(t, rolePrimary, get("/api/compliance/data/?cursor=zzz"), http.StatusBadRequest), "cursor", "")
	requireParam(t, cf.call(t, rolePrimary, get("/api/compliance/data/?page_size=5000"), http.StatusBadRequest), "page_size", "1 to 1000")

	// CSV: slots only, a header line.
	res = cf.as(rolePrimary, req{method: http.MethodGet, path: "/api/compliance/data/?status=CONFIRMED", header: map[string]string{"Accept": "text/csv"}})
	cf.bodies = append(cf.bodies, string(res.body))
	require.Equal(t, http.StatusOK, res.status, "%s", res)
	require.True(t, strings.HasPrefix(res.header.Get("Content-Type"), "text/csv"))
	lines := strings.Split(strings.TrimSpace(res.String()), "\n")
	require.Len(t, lines, 2)
	require.True(t, strings.HasPrefix(lines[0], "id,config_id,point,source,slot_at,"))
	require.Contains(t, lines[1], ",P-OWN,dga-subterraneas,2026-11-02T04:00:00Z,")
	require.Contains(t, lines[1], ",CONFIRMED,10.5,1000,,1,RCPT-1,")
	require.Equal(t, http.StatusNotAcceptable, cf.as(rolePrimary, req{method: http.MethodGet, path: "/api/compliance/data/",
		header: map[string]string{"Accept": query.MediaArrow}}).status)

	// Resubmission: manage_compliance, a reason, a final state.
	rs := func(id int64) string { return fmt.Sprintf("/api/compliance/data/%d/resubmit/", id) }
	why := map[string]any{"reason": "the regulator lost it"}
	cf.call(t, roleStranger, post(rs(confirmedID), why), http.StatusNotFound)
	cf.call(t, roleStranger, post(rs(999999), why), http.StatusNotFound)
	cf.call(t, roleSecondary, post(rs(confirmedID), why), http.StatusForbidden)
	requireParam(t, cf.call(t, rolePrimary, post(rs(confirmedID), map[string]any{"reason": "  "}), http.StatusBadRequest), "reason", "required")
	requireParam(t, cf.call(t, rolePrimary, post(rs(confirmedID), map[string]any{}), http.StatusBadRequest), "reason", "required")
	res = cf.call(t, rolePrimary, post(rs(confirmedID), why), http.StatusOK)
	slot := res.json(t)
	require.Equal(t, "PENDING", slot["status"])
	require.Equal(t, 1.0, slot["round"])
	require.Len(t, slot["attempts"], 1, "the history stays")
	evs := cf.auditRows(res.header.Get("X-Request-Id"))
	require.Len(t, evs, 1)
	require.Equal(t, "compliance_submission.resubmit", evs[0].Action)
	require.Equal(t, pointOwn, evs[0].Point)
	var reason string
	require.NoError(t, cf.pool.QueryRow(cf.ctx, `SELECT after->>'reason' FROM audit_log WHERE id = $1`, evs[0].ID).Scan(&reason))
	require.Contains(t, reason, "the regulator lost it")
	requireParam(t, cf.call(t, rolePrimary, post(rs(confirmedID), why), http.StatusConflict), "id", "is PENDING")
	cf.call(t, roleAdministrator, post(rs(rejectedID), why), http.StatusOK)
	pendingWithData := slotIDs(roleAdmin, "?point=P-OWN&status=PENDING")
	require.Len(t, pendingWithData, 5)
	// A slot that was never sent is not final: 409.
	cf.call(t, roleAdmin, post(rs(seen[0]), why), http.StatusConflict)

	cf.requireNoSecrets(t)
}

// TestComplianceAPIWithoutStore checks that the compliance routes answer
// 503 naming the missing component when the API runs without it, and are
// documented all the same.
func TestComplianceAPIWithoutStoreIntegration(t *testing.T) {
	f := newFixture(t)
	for _, rq := range []req{
		{method: http.MethodGet, path: "/api/compliance/sources/"},
		{method: http.MethodGet, path: "/api/compliance/configs/"},
		{method: http.MethodPost, path: "/api/compliance/configs/", body: dgaConfig("2026-11-01")},
		{method: http.MethodGet, path: "/api/compliance/configs/1/"},
		{method: http.MethodPatch, path: "/api/compliance/configs/1/", body: map[string]any{}},
		{method: http.MethodPost, path: "/api/compliance/configs/1/end/", body: map[string]any{"end_date": "2026-12-01"}},
		{method: http.MethodGet, path: "/api/compliance/data/"},
		{method: http.MethodPost, path: "/api/compliance/data/1/resubmit/", body: map[string]any{"reason": "x"}},
	} {
		res := f.as(roleAdmin, rq)
		require.Equal(t, http.StatusServiceUnavailable, res.status, "%s %s: %s", rq.method, rq.path, res)
		require.Contains(t, res.json(t)["error"], "compliance store")
	}
}

// TestComplianceAPIWithoutKeyIntegration checks that without
// compliance.credentials_key a config with credentials is refused with 503
// naming the key, and one without credentials is created.
func TestComplianceAPIWithoutKeyIntegration(t *testing.T) {
	cf := newComplianceFixture(t, false)
	res := cf.call(t, rolePrimary, req{method: http.MethodPost, path: "/api/compliance/configs/", body: dgaConfig("2026-11-01")}, http.StatusServiceUnavailable)
	requireParam(t, res, "credentials", "compliance.credentials_key is not set")
	body := dgaConfig("2026-11-01")
	delete(body, "credentials")
	res = cf.call(t, rolePrimary, req{method: http.MethodPost, path: "/api/compliance/configs/", body: body}, http.StatusCreated)
	require.Equal(t, false, res.json(t)["credentials_set"])
	cf.requireNoSecrets(t)
}

// TestComplianceOpenAPI checks that the document describes every
// compliance operation and never offers a way to read credentials.
func TestComplianceOpenAPI(t *testing.T) {
	t.Parallel()
	doc := loadDoc(t, newOfflineAPI(t).OpenAPI())
	ops := map[string]string{
		"GET /api/compliance/sources/":             "listComplianceSources",
		"GET /api/compliance/configs/":             "listComplianceConfigs",
		"POST /api/compliance/configs/":            "createComplianceConfig",
		"GET /api/compliance/configs/{id}/":        "getComplianceConfig",
		"PATCH /api/compliance/configs/{id}/":      "updateComplianceConfig",
		"POST /api/compliance/configs/{id}/end/":   "endComplianceConfig",
		"GET /api/compliance/data/":                "listComplianceData",
		"POST /api/compliance/data/{id}/resubmit/": "resubmitComplianceSlot",
	}
	for key, id := range ops {
		method, path, _ := strings.Cut(key, " ")
		item := doc.Paths.Value(path)
		require.NotNil(t, item, key)
		op := item.GetOperation(method)
		require.NotNil(t, op, key)
		require.Equal(t, id, op.OperationID)
		require.Equal(t, []string{"compliance"}, op.Tags)
		require.NotNil(t, op.Responses.Status(503), "%s documents 503", key)
		if ok := op.Responses.Status(200); ok != nil && ok.Value.Content.Get(query.MediaJSON) != nil {
			b, err := json.Marshal(ok.Value.Content.Get(query.MediaJSON).Schema.Value)
			require.NoError(t, err)
			require.NotContains(t, string(b), `"password"`, "%s: no response has a password", key)
		}
	}
	require.NotNil(t, doc.Tags.Get("compliance"), "the compliance tag is declared")
	require.Nil(t, doc.Paths.Value("/api/compliance/configs/{id}/").Delete, "ending keeps history: no DELETE")
	data := doc.Paths.Value("/api/compliance/data/").Get.Responses.Status(200).Value.Content
	require.NotNil(t, data.Get(query.MediaCSV))
}

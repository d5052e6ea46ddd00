package query_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/points"
)

// seq makes names unique within a test.
var seq atomic.Int64

func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// newPoint creates a point related to the roles as P-OWN is (own) or as
// P-FOREIGN is (foreign).
func (f *fixture) newPoint(own bool) string {
	f.t.Helper()
	code := uniq("P")
	_, err := f.acc.CreatePoint(f.ctx, f.sys, points.Point{Code: code, Active: true})
	require.NoError(f.t, err)
	grants := map[string]accounts.Relation{roleStranger: accounts.RelationPrimary}
	if own {
		grants = map[string]accounts.Relation{rolePrimary: accounts.RelationPrimary,
			roleSecondary: accounts.RelationSecondary, roleAdministrator: accounts.RelationAdministrator}
	}
	for role, rel := range grants {
		_, err := f.acc.Grant(f.ctx, f.sys, code, f.users[role].ID, rel, nil)
		require.NoError(f.t, err)
	}
	return code
}

// newDevice creates a device on point.
func (f *fixture) newDevice(point string) string {
	f.t.Helper()
	id := uniq("D")
	_, err := f.acc.AddDevice(f.ctx, f.sys, points.Device{ID: id, Point: point, Provider: "generic-json", Active: true})
	require.NoError(f.t, err)
	return id
}

// statuses gives the expected status per role.
type statuses map[string]int

// ownRead: every related role reads the own point, the stranger gets 404.
func ownRead(ok int) statuses {
	return statuses{roleAdmin: ok, rolePrimary: ok, roleSecondary: ok, roleAdministrator: ok, roleStranger: 404}
}

// foreignRead: only the admin and the stranger (its owner) see it.
func foreignRead(ok int) statuses {
	return statuses{roleAdmin: ok, rolePrimary: 404, roleSecondary: 404, roleAdministrator: 404, roleStranger: ok}
}

// ownWrite: admin, PRIMARY and ADMINISTRATOR may; SECONDARY sees but may
// not (403); the stranger does not see (404).
func ownWrite(ok int) statuses {
	return statuses{roleAdmin: ok, rolePrimary: ok, roleSecondary: 403, roleAdministrator: ok, roleStranger: 404}
}

// matrixCase is one endpoint on one point.
type matrixCase struct {
	name string
	// build returns the request for role, creating what it needs.
	build func(f *fixture, role string) req
	want  statuses
	// action is the audit_log action a success writes ("" for reads).
	action string
}

func matrixCases() []matrixCase {
	day := url.Values{"from": {"2025-01-01T00:00:00Z"}, "to": {"2025-01-02T00:00:00Z"}}
	data := func(point string) string {
		v := url.Values{"point": {point}}
		for k, vs := range day {
			v[k] = vs
		}
		return "/api/telemetry/data/?" + v.Encode()
	}
	get := func(path string) func(*fixture, string) req {
		return func(*fixture, string) req { return req{method: http.MethodGet, path: path} }
	}
	notify := func(point string, userRole string) func(*fixture, string) req {
		return func(f *fixture, role string) req {
			// A new webhook each time, so that every request changes something.
			body := map[string]any{"point": point, "notification_types": []string{"threshold"},
				"channels": []string{"email", "webhook"}, "webhook_url": "https://hooks.example.cl/" + uniq("h")}
			if userRole != "" {
				body["user_id"] = f.users[userRole].ID
			}
			return req{method: http.MethodPost, path: "/api/users/notifications/", body: body}
		}
	}
	process := func(device string) func(*fixture, string) req {
		return func(*fixture, string) req {
			return req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + device, body: []byte(`{"flow": 1}`)}
		}
	}
	return []matrixCase{
		{name: "openapi", build: get("/api/openapi.json"), want: statuses{roleAdmin: 200, rolePrimary: 200, roleSecondary: 200, roleAdministrator: 200, roleStranger: 200}},
		{name: "data/own", build: get(data(pointOwn)), want: ownRead(200)},
		{name: "data/foreign", build: get(data(pointForeign)), want: foreignRead(200)},
		{name: "data/bucket/own", build: get(data(pointOwn) + "&bucket=1h"), want: ownRead(200)},
		{name: "latest/own", build: get("/api/telemetry/latest/?point=" + pointOwn), want: ownRead(200)},
		{name: "latest/foreign", build: get("/api/telemetry/latest/?point=" + pointForeign), want: foreignRead(200)},
		{name: "latest/all", build: get("/api/telemetry/latest/"), want: statuses{roleAdmin: 200, rolePrimary: 200, roleSecondary: 200, roleAdministrator: 200, roleStranger: 200}},
		{name: "owners/own", build: get("/api/users/owners/?point=" + pointOwn), want: ownRead(200)},
		{name: "owners/foreign", build: get("/api/users/owners/?point=" + pointForeign), want: foreignRead(200)},
		{name: "notifications/self/own", build: notify(pointOwn, ""), action: "notifications.set",
			// The admin has no relation to the point: nobody is told about a
			// point they are not related to.
			want: statuses{roleAdmin: 404, rolePrimary: 200, roleSecondary: 200, roleAdministrator: 200, roleStranger: 404}},
		{name: "notifications/self/foreign", build: notify(pointForeign, ""), action: "notifications.set",
			want: statuses{roleAdmin: 404, rolePrimary: 404, roleSecondary: 404, roleAdministrator: 404, roleStranger: 200}},
		{name: "notifications/other/own", build: notify(pointOwn, rolePrimary), action: "notifications.set",
			want: statuses{roleAdmin: 200, rolePrimary: 200, roleSecondary: 403, roleAdministrator: 200, roleStranger: 404}},
		{name: "notifications/other/foreign", build: notify(pointForeign, roleStranger), action: "notifications.set",
			want: foreignRead(200)},
		{name: "points/list", build: get("/api/points/"), want: statuses{roleAdmin: 200, rolePrimary: 200, roleSecondary: 200, roleAdministrator: 200, roleStranger: 200}},
		{name: "points/create", action: "point.create",
			build: func(*fixture, string) req {
				return req{method: http.MethodPost, path: "/api/points/", body: map[string]any{"code": uniq("NEW"), "name": "Nuevo pozo"}}
			},
			want: statuses{roleAdmin: 201, rolePrimary: 403, roleSecondary: 403, roleAdministrator: 403, roleStranger: 403}},
		{name: "point/get/own", build: get("/api/points/" + pointOwn + "/"), want: ownRead(200)},
		{name: "point/get/foreign", build: get("/api/points/" + pointForeign + "/"), want: foreignRead(200)},
		{name: "point/patch/own", action: "point.update",
			build: func(*fixture, string) req {
				return req{method: http.MethodPatch, path: "/api/points/" + pointOwn + "/", body: map[string]any{"name": uniq("Pozo")}}
			},
			want: ownWrite(200)},
		{name: "point/patch/foreign", action: "point.update",
			build: func(*fixture, string) req {
				return req{method: http.MethodPatch, path: "/api/points/" + pointForeign + "/", body: map[string]any{"name": uniq("Pozo")}}
			},
			want: foreignRead(200)},
		{name: "point/delete/own", action: "point.delete",
			build: func(f *fixture, _ string) req {
				return req{method: http.MethodDelete, path: "/api/points/" + f.newPoint(true) + "/"}
			},
			want: statuses{roleAdmin: 204, rolePrimary: 403, roleSecondary: 403, roleAdministrator: 403, roleStranger: 404}},
		{name: "point/delete/foreign", action: "point.delete",
			build: func(f *fixture, _ string) req {
				return req{method: http.MethodDelete, path: "/api/points/" + f.newPoint(false) + "/"}
			},
			want: statuses{roleAdmin: 204, rolePrimary: 404, roleSecondary: 404, roleAdministrator: 404, roleStranger: 403}},
		{name: "devices/list/own", build: get("/api/points/" + pointOwn + "/devices/"), want: ownRead(200)},
		{name: "devices/list/foreign", build: get("/api/points/" + pointForeign + "/devices/"), want: foreignRead(200)},
		{name: "devices/add/own", action: "device.create",
			build: func(*fixture, string) req {
				return req{method: http.MethodPost, path: "/api/points/" + pointOwn + "/devices/", body: map[string]any{"id": uniq("NEWD"), "provider": "generic-json"}}
			},
			want: ownWrite(201)},
		{name: "devices/add/foreign", action: "device.create",
			build: func(*fixture, string) req {
				return req{method: http.MethodPost, path: "/api/points/" + pointForeign + "/devices/", body: map[string]any{"id": uniq("NEWD")}}
			},
			want: foreignRead(201)},
		{name: "device/patch/own", action: "device.update",
			build: func(f *fixture, _ string) req {
				return req{method: http.MethodPatch, path: "/api/devices/" + f.newDevice(pointOwn) + "/", body: map[string]any{"active": false}}
			},
			want: ownWrite(200)},
		{name: "device/patch/foreign", action: "device.update",
			build: func(f *fixture, _ string) req {
				return req{method: http.MethodPatch, path: "/api/devices/" + f.newDevice(pointForeign) + "/", body: map[string]any{"provider": nil}}
			},
			want: foreignRead(200)},
		{name: "device/delete/own", action: "device.delete",
			build: func(f *fixture, _ string) req {
				return req{method: http.MethodDelete, path: "/api/devices/" + f.newDevice(pointOwn) + "/"}
			},
			want: ownWrite(204)},
		{name: "device/delete/foreign", action: "device.delete",
			build: func(f *fixture, _ string) req {
				return req{method: http.MethodDelete, path: "/api/devices/" + f.newDevice(pointForeign) + "/"}
			},
			want: foreignRead(204)},
		{name: "process/own", build: process(deviceOwn), want: ownWrite(202)},
		{name: "process/foreign", build: process(deviceFor), want: foreignRead(202)},
	}
}

// TestAuthorizationMatrixIntegration runs every endpoint on an own and a
// foreign point as each role, and checks the status, that 404s are those of
// something that does not exist, and that every change, and nothing else,
// is in audit_log with the request's id and the caller as actor.
func TestAuthorizationMatrixIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range matrixCases() {
		for _, role := range roles {
			t.Run(tc.name+"/"+role, func(t *testing.T) {
				rq := tc.build(f, role)
				res := f.as(role, rq)
				require.Equal(t, tc.want[role], res.status, "%s %s as %s: %s", rq.method, rq.path, role, res)
				reqID := res.header.Get("X-Request-Id")
				require.NotEmpty(t, reqID)
				rows := f.auditRows(reqID)
				switch {
				case res.status >= 400:
					require.Empty(t, rows, "a refused request changes nothing")
					require.NotEmpty(t, res.json(t)["error"])
				case tc.action != "":
					require.Len(t, rows, 1, "one audit row per change")
					require.Equal(t, tc.action, rows[0].Action)
					require.Equal(t, "user:"+role+"@example.cl", rows[0].Actor)
					require.Equal(t, f.users[role].ID, rows[0].ActorUserID)
				default:
					require.Empty(t, rows, "a read is not audited")
				}
			})
		}
	}

	// A point or device the caller cannot see answers exactly as one that
	// does not exist.
	t.Run("invisible is absent", func(t *testing.T) {
		pairs := []struct{ invisible, absent req }{
			{req{method: http.MethodGet, path: "/api/points/" + pointForeign + "/"}, req{method: http.MethodGet, path: "/api/points/P-NOPE/"}},
			{req{method: http.MethodGet, path: "/api/users/owners/?point=" + pointForeign}, req{method: http.MethodGet, path: "/api/users/owners/?point=P-NOPE"}},
			{req{method: http.MethodGet, path: "/api/telemetry/latest/?point=" + pointForeign}, req{method: http.MethodGet, path: "/api/telemetry/latest/?point=P-NOPE"}},
			{req{method: http.MethodGet, path: "/api/telemetry/data/?from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z&point=" + pointForeign}, req{method: http.MethodGet, path: "/api/telemetry/data/?from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z&point=P-NOPE"}},
			{req{method: http.MethodGet, path: "/api/points/" + pointForeign + "/devices/"}, req{method: http.MethodGet, path: "/api/points/P-NOPE/devices/"}},
			{req{method: http.MethodDelete, path: "/api/points/" + pointForeign + "/"}, req{method: http.MethodDelete, path: "/api/points/P-NOPE/"}},
			{req{method: http.MethodPatch, path: "/api/devices/" + deviceFor + "/", body: map[string]any{}}, req{method: http.MethodPatch, path: "/api/devices/D-NOPE/", body: map[string]any{}}},
			{req{method: http.MethodDelete, path: "/api/devices/" + deviceFor + "/"}, req{method: http.MethodDelete, path: "/api/devices/D-NOPE/"}},
			{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceFor, body: []byte("x")}, req{method: http.MethodPost, path: "/api/telemetry/process/?device=D-NOPE", body: []byte("x")}},
		}
		for _, p := range pairs {
			inv, abs := f.as(rolePrimary, p.invisible), f.as(rolePrimary, p.absent)
			require.Equal(t, http.StatusNotFound, inv.status, "%s %s: %s", p.invisible.method, p.invisible.path, inv)
			require.Equal(t, abs.status, inv.status)
			norm := func(s string) string {
				return strings.NewReplacer(pointForeign, "X", "P-NOPE", "X", deviceFor, "X", "D-NOPE", "X").Replace(s)
			}
			require.Equal(t, norm(abs.String()), norm(inv.String()), "%s %s", p.invisible.method, p.invisible.path)
			require.Equal(t, abs.header.Get("Content-Type"), inv.header.Get("Content-Type"))
		}
	})

	t.Run("lists show only what the caller may see", func(t *testing.T) {
		codes := func(role string) []string {
			res := f.as(role, req{method: http.MethodGet, path: "/api/points/"})
			require.Equal(t, http.StatusOK, res.status)
			var out []string
			for _, p := range res.json(t)["results"].([]any) {
				out = append(out, p.(map[string]any)["code"].(string))
			}
			return out
		}
		require.NotContains(t, codes(rolePrimary), pointForeign)
		require.Contains(t, codes(rolePrimary), pointOwn)
		require.Equal(t, []string{pointForeign}, onlyFixed(codes(roleStranger)))
		require.Contains(t, codes(roleAdmin), pointForeign)

		res := f.as(roleSecondary, req{method: http.MethodGet, path: "/api/points/" + pointOwn + "/"})
		require.Equal(t, []any{"read"}, res.json(t)["permissions"])
		res = f.as(roleSecondary, req{method: http.MethodGet, path: "/api/telemetry/latest/"})
		require.NotContains(t, res.String(), pointForeign)
	})
}

// onlyFixed keeps the fixture's two points (the matrix adds others).
func onlyFixed(codes []string) []string {
	var out []string
	for _, c := range codes {
		if c == pointOwn || c == pointForeign {
			out = append(out, c)
		}
	}
	return out
}

// TestTokensIntegration sends every route without a valid token: missing,
// malformed, with another scheme, unknown, revoked, expired, of an inactive
// user, twice. Each is the same 401 with WWW-Authenticate: Token.
func TestTokensIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	revoked, tok, err := f.acc.CreateToken(f.ctx, f.sys, f.users[rolePrimary].ID, "revoked", 0)
	require.NoError(t, err)
	_, err = f.acc.RevokeToken(f.ctx, f.sys, tok.ID)
	require.NoError(t, err)
	expired, _, err := f.acc.CreateToken(f.ctx, f.sys, f.users[rolePrimary].ID, "expired", time.Nanosecond)
	require.NoError(t, err)
	inactiveUser, err := f.acc.CreateUser(f.ctx, f.sys, accounts.NewUser{Email: "gone@example.cl"})
	require.NoError(t, err)
	inactive, _, err := f.acc.CreateToken(f.ctx, f.sys, inactiveUser.ID, "t", 0)
	require.NoError(t, err)
	_, err = f.acc.UpdateUser(f.ctx, f.sys, inactiveUser.ID, accounts.UserChanges{Active: new(false)})
	require.NoError(t, err)
	unknown := "svps_" + strings.Repeat("A", 43)

	auths := map[string]string{
		"missing":   "",
		"empty":     "Token ",
		"malformed": "Token not-a-token",
		"bearer":    "Bearer " + f.tokens[rolePrimary],
		"basic":     "Basic dXNlcjpwYXNz",
		"unknown":   "Token " + unknown,
		"revoked":   "Token " + revoked,
		"expired":   "Token " + expired,
		"inactive":  "Token " + inactive,
		"injection": "Token ' OR 1=1 --",
		"long":      "Token " + strings.Repeat("x", 6000),
	}
	routes := []req{
		{method: http.MethodGet, path: "/api/openapi.json"},
		{method: http.MethodGet, path: "/api/telemetry/data/?point=" + pointOwn + "&from=2025-01-01T00:00:00Z"},
		{method: http.MethodGet, path: "/api/telemetry/latest/"},
		{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("{}")},
		{method: http.MethodGet, path: "/api/users/owners/?point=" + pointOwn},
		{method: http.MethodPost, path: "/api/users/notifications/", body: map[string]any{"point": pointOwn}},
		{method: http.MethodGet, path: "/api/points/"},
		{method: http.MethodPost, path: "/api/points/", body: map[string]any{"code": "X"}},
		{method: http.MethodGet, path: "/api/points/" + pointOwn + "/"},
		{method: http.MethodPatch, path: "/api/points/" + pointOwn + "/", body: map[string]any{}},
		{method: http.MethodDelete, path: "/api/points/" + pointOwn + "/"},
		{method: http.MethodGet, path: "/api/points/" + pointOwn + "/devices/"},
		{method: http.MethodPost, path: "/api/points/" + pointOwn + "/devices/", body: map[string]any{"id": "X"}},
		{method: http.MethodPatch, path: "/api/devices/" + deviceOwn + "/", body: map[string]any{}},
		{method: http.MethodDelete, path: "/api/devices/" + deviceOwn + "/"},
		{method: http.MethodGet, path: "/api/no/such/route/"},
	}
	var first string
	for _, rt := range routes {
		for name, auth := range auths {
			rq := rt
			rq.auth = auth
			res := f.do(rq)
			require.Equal(t, http.StatusUnauthorized, res.status, "%s %s with %s: %s", rq.method, rq.path, name, res)
			require.Equal(t, "Token", res.header.Get("WWW-Authenticate"))
			require.Equal(t, "Authorization", res.json(t)["param"])
			if first == "" {
				first = res.String()
			}
			require.Equal(t, first, res.String(), "every 401 says the same")
		}
	}
	// Two Authorization headers, one of them valid.
	hr, err := http.NewRequestWithContext(f.ctx, http.MethodGet, f.srv.URL+"/api/points/", nil)
	require.NoError(t, err)
	hr.Header.Add("Authorization", "Token "+f.tokens[roleAdmin])
	hr.Header.Add("Authorization", "Token "+unknown)
	res, err := http.DefaultClient.Do(hr)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Empty(t, f.auditRows(res.Header.Get("X-Request-Id")))

	// The token works, in any case of the scheme.
	ok := f.do(req{method: http.MethodGet, path: "/api/points/", auth: "token " + f.tokens[rolePrimary]})
	require.Equal(t, http.StatusOK, ok.status)
}

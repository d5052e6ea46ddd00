package query_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// injections are hostile values tried in every parameter.
var injections = map[string]string{
	"sql quote":     `' OR 1=1 --`,
	"sql statement": `x'; DROP TABLE readings; --`,
	"sql comment":   `P-OWN'/*`,
	"nul":           "\x00",
	"percent nul":   "%00",
	"control":       "a\r\nSet-Cookie: x=y",
	"very long":     strings.Repeat("A", 10000),
	"long unicode":  strings.Repeat("ñ", 3000),
	"unicode":       "ñandú☃𝄞",
	"bidi":          "\u202eNWO-P",
	"invalid utf-8": "\xff\xfe",
	"path":          "../../etc/passwd",
	"template":      "{{7*7}}${7*7}",
	"number":        "1e309",
	"negative":      "-1",
	"json":          `{"$gt": ""}`,
	"empty":         "",
	"spaces":        "   ",
}

// target puts a value into one parameter of one request.
type target struct {
	name  string
	param string // the parameter errors must name
	role  string // who sends it; PRIMARY when empty
	build func(v string) req
}

func queryTarget(name, path, param string, base url.Values) target {
	return target{name: name, param: param, build: func(v string) req {
		q := url.Values{}
		for k, vs := range base {
			q[k] = vs
		}
		q.Set(param, v)
		return req{method: http.MethodGet, path: path + "?" + q.Encode()}
	}}
}

// uniqueCode in a body template is replaced by a fresh code.
const uniqueCode = "<unique>"

func asAdmin(t target) target {
	t.role = roleAdmin
	return t
}

func bodyTarget(name, method, path, field string, base map[string]any, wrap func(string) any) target {
	return target{name: name, param: field, build: func(v string) req {
		b := map[string]any{}
		for k, x := range base {
			if x == uniqueCode {
				x = uniq("INJ")
			}
			b[k] = x
		}
		if wrap != nil {
			b[field] = wrap(v)
		} else {
			b[field] = v
		}
		return req{method: method, path: path, body: b}
	}}
}

func pathTarget(name, method, prefix, suffix, param string, body any) target {
	return target{name: name, param: param, build: func(v string) req {
		return req{method: method, path: prefix + url.PathEscape(v) + suffix, body: body}
	}}
}

func injectionTargets() []target {
	data := url.Values{"point": {pointOwn}, "from": {"2025-03-10T12:00:00Z"}, "to": {"2025-03-10T15:00:00Z"}}
	list := func(v string) any { return []string{v} }
	notif := map[string]any{"point": pointOwn, "channels": []string{"email"}}
	var ts []target
	for _, p := range []string{"point", "variable", "from", "to", "bucket", "page_size", "cursor"} {
		ts = append(ts, queryTarget("data/"+p, "/api/telemetry/data/", p, data))
	}
	ts = append(ts,
		queryTarget("latest/point", "/api/telemetry/latest/", "point", nil),
		queryTarget("latest/variable", "/api/telemetry/latest/", "variable", url.Values{"point": {pointOwn}}),
		queryTarget("owners/point", "/api/users/owners/", "point", nil),
		target{name: "process/device", param: "device", build: func(v string) req {
			return req{method: http.MethodPost, path: "/api/telemetry/process/?" + url.Values{"device": {v}}.Encode(), body: []byte("{}")}
		}},
		target{name: "process/provider", param: "provider", build: func(v string) req {
			return req{method: http.MethodPost, path: "/api/telemetry/process/?" + url.Values{"device": {deviceOwn}, "provider": {v}}.Encode(), body: []byte("{}")}
		}},
		target{name: "process/X-Device", param: "device", build: func(v string) req {
			return req{method: http.MethodPost, path: "/api/telemetry/process/", body: []byte("{}"), header: map[string]string{"X-Device": headerSafe(v)}}
		}},
		target{name: "process/X-Provider", param: "provider", build: func(v string) req {
			return req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("{}"), header: map[string]string{"X-Provider": headerSafe(v)}}
		}},
		pathTarget("point/get", http.MethodGet, "/api/points/", "/", "code", nil),
		pathTarget("point/patch", http.MethodPatch, "/api/points/", "/", "code", map[string]any{"name": "x"}),
		pathTarget("point/delete", http.MethodDelete, "/api/points/", "/", "code", nil),
		pathTarget("devices/list", http.MethodGet, "/api/points/", "/devices/", "code", nil),
		pathTarget("devices/add", http.MethodPost, "/api/points/", "/devices/", "code", map[string]any{"id": "D-X"}),
		pathTarget("device/patch", http.MethodPatch, "/api/devices/", "/", "id", map[string]any{"active": true}),
		pathTarget("device/delete", http.MethodDelete, "/api/devices/", "/", "id", nil),
		asAdmin(bodyTarget("points/create/code", http.MethodPost, "/api/points/", "code", nil, nil)),
		asAdmin(bodyTarget("points/create/name", http.MethodPost, "/api/points/", "name", map[string]any{"code": uniqueCode}, nil)),
		asAdmin(bodyTarget("points/create/kind", http.MethodPost, "/api/points/", "kind", map[string]any{"code": uniqueCode}, nil)),
		asAdmin(bodyTarget("points/create/timezone", http.MethodPost, "/api/points/", "timezone", map[string]any{"code": uniqueCode}, nil)),
		bodyTarget("point/patch/name", http.MethodPatch, "/api/points/"+pointOwn+"/", "name", nil, nil),
		bodyTarget("point/patch/kind", http.MethodPatch, "/api/points/"+pointOwn+"/", "kind", nil, nil),
		bodyTarget("point/patch/timezone", http.MethodPatch, "/api/points/"+pointOwn+"/", "timezone", nil, nil),
		bodyTarget("devices/add/id", http.MethodPost, "/api/points/"+pointOwn+"/devices/", "id", nil, nil),
		bodyTarget("devices/add/provider", http.MethodPost, "/api/points/"+pointOwn+"/devices/", "provider", map[string]any{"id": uniqueCode}, nil),
		bodyTarget("device/patch/point", http.MethodPatch, "/api/devices/"+deviceOwn+"/", "point", nil, nil),
		bodyTarget("device/patch/provider", http.MethodPatch, "/api/devices/"+deviceOwn+"/", "provider", nil, nil),
		bodyTarget("notifications/point", http.MethodPost, "/api/users/notifications/", "point", notif, nil),
		bodyTarget("notifications/notification_types", http.MethodPost, "/api/users/notifications/", "notification_types", notif, list),
		bodyTarget("notifications/channels", http.MethodPost, "/api/users/notifications/", "channels", notif, list),
		bodyTarget("notifications/webhook_url", http.MethodPost, "/api/users/notifications/", "webhook_url", notif, nil),
		bodyTarget("notifications/phone", http.MethodPost, "/api/users/notifications/", "phone", notif, nil),
		bodyTarget("notifications/language", http.MethodPost, "/api/users/notifications/", "language", notif, nil),
	)
	return ts
}

// headerSafe drops what cannot travel in a header at all (the client
// refuses it): CR, LF and NUL.
func headerSafe(v string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return '?'
		}
		return r
	}, v)
}

// TestInjectionIntegration puts hostile values in every parameter of every
// endpoint: each answer is a 4xx naming the parameter, or a success that
// shows nothing the caller may not see; never a 5xx, a database error or a
// stack trace.
func TestInjectionIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seedRaw(f)
	var before int
	require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT count(*) FROM readings`).Scan(&before))
	leaks := []string{pointForeign, deviceFor, "stranger@", "SQLSTATE", "pgx", "ERROR:", "panic", "goroutine", "syntax error"}
	for _, tg := range injectionTargets() {
		for name, v := range injections {
			t.Run(tg.name+"/"+name, func(t *testing.T) {
				rq := tg.build(v)
				role := tg.role
				if role == "" {
					role = rolePrimary
				}
				res := f.as(role, rq)
				require.Less(t, res.status, 500, "%s %s: %s", rq.method, rq.path, res)
				for _, l := range leaks {
					require.NotContains(t, res.String(), l, "%s %s", rq.method, rq.path)
				}
				switch {
				case res.status >= 400:
					body := res.json(t)
					require.NotEmpty(t, body["error"])
					require.Equal(t, tg.param, body["param"], "%s %s: %s", rq.method, rq.path, res)
				case res.status == http.StatusOK && (tg.param == "point" || tg.param == "variable"):
					rs, ok := res.json(t)["results"].([]any)
					require.True(t, ok, "%s", res)
					require.Empty(t, rs, "%s %s: a hostile value selects nothing", rq.method, rq.path)
				}
			})
		}
	}

	t.Run("raw query strings", func(t *testing.T) {
		for raw, param := range map[string]string{
			"point=%00&from=2025-01-01T00:00:00Z":                                     "point",
			"point=%zz&from=2025-01-01T00:00:00Z":                                     "point",
			"point=P-OWN&from=2025-01-01T00:00:00Z&from=2025-01-02T00:00:00Z":         "from",
			"point=P-OWN&from=2025-01-01T00:00:00Z;x=1":                               "query",
			"%27+OR+1%3D1+--=1":                                                       "' OR 1=1 --",
			"point=P-OWN&from=2025-03-10T12:00:00+00:00&to=2025-03-10T12:00:01+00:00": "",
		} {
			res := f.as(rolePrimary, req{method: http.MethodGet, path: "/api/telemetry/data/?" + raw})
			if param == "" {
				require.Equal(t, http.StatusOK, res.status, "%s: %s (an unencoded + in the offset is read as +)", raw, res)
				continue
			}
			require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", raw, res)
			require.Equal(t, param, res.json(t)["param"], raw)
		}
	})

	t.Run("malformed bodies", func(t *testing.T) {
		for body, param := range map[string]string{
			`{`:                               "body",
			`[]`:                              "body",
			`{"code": 1}`:                     "code",
			`{"code": "P-X", "evil": 1}`:      "evil",
			`{"code": "P-X"} {"code": "P-Y"}`: "body",
			``:                                "body",
			`null`:                            "code",
		} {
			res := f.as(roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: body})
			require.Equal(t, http.StatusBadRequest, res.status, "%q: %s", body, res)
			require.Equal(t, param, res.json(t)["param"], "%q", body)
		}
		res := f.as(roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: `{"code": "P-X"}`,
			header: map[string]string{"Content-Type": "text/plain"}})
		require.Equal(t, http.StatusUnsupportedMediaType, res.status)
		res = f.as(roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: `{"code": "` + strings.Repeat("x", 70000) + `"}`})
		require.Equal(t, http.StatusRequestEntityTooLarge, res.status)
		res = f.as(roleAdmin, req{method: http.MethodPatch, path: "/api/points/" + pointOwn + "/", body: `{"name": null}`})
		require.Equal(t, http.StatusBadRequest, res.status)
		require.Equal(t, "name", res.json(t)["param"])
	})

	var after int
	require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT count(*) FROM readings`).Scan(&after))
	require.Equal(t, before, after, "readings untouched")
}

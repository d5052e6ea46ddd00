package query_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRoutingIntegration covers what surrounds the handlers: the trailing
// slash redirect, JSON 404 and 405, the request id (kept when sane,
// replaced otherwise, always echoed and in audit_log) and the metrics.
func TestRoutingIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	res := f.as(rolePrimary, req{method: http.MethodGet, path: "/api/points?x=1"})
	require.Equal(t, http.StatusPermanentRedirect, res.status)
	require.Equal(t, "/api/points/?x=1", res.header.Get("Location"))
	res = f.as(rolePrimary, req{method: http.MethodPatch, path: "/api/points/" + pointOwn, body: map[string]any{}})
	require.Equal(t, http.StatusPermanentRedirect, res.status, "the method is kept by 308")
	require.Equal(t, "/api/points/"+pointOwn+"/", res.header.Get("Location"))

	res = f.as(rolePrimary, req{method: http.MethodGet, path: "/api/compliance/nope/"})
	require.Equal(t, http.StatusNotFound, res.status, "an unknown route")
	require.Contains(t, res.json(t)["error"], "no route")
	res = f.as(rolePrimary, req{method: http.MethodPost, path: "/api/telemetry/data/"})
	require.Equal(t, http.StatusMethodNotAllowed, res.status)
	require.Equal(t, "GET", res.header.Get("Allow"))
	require.Equal(t, "application/json", res.header.Get("Content-Type"))

	// A sane request id is kept and lands in audit_log; a hostile one is
	// replaced.
	res = f.as(rolePrimary, req{method: http.MethodPatch, path: "/api/points/" + pointOwn + "/",
		body: map[string]any{"name": "Pozo 1"}, header: map[string]string{"X-Request-Id": "trace-42.abc"}})
	require.Equal(t, http.StatusOK, res.status, "%s", res)
	require.Equal(t, "trace-42.abc", res.header.Get("X-Request-Id"))
	rows := f.auditRows("trace-42.abc")
	require.Len(t, rows, 1)
	require.Equal(t, "point.update", rows[0].Action)
	require.Equal(t, pointOwn, rows[0].Point)
	for _, bad := range []string{"x'; DROP TABLE audit_log; --", strings.Repeat("a", 200), "ñ"} {
		res = f.as(rolePrimary, req{method: http.MethodGet, path: "/api/points/", header: map[string]string{"X-Request-Id": bad}})
		require.Equal(t, http.StatusOK, res.status)
		require.NotEqual(t, bad, res.header.Get("X-Request-Id"))
		require.NotEmpty(t, res.header.Get("X-Request-Id"))
	}

	// Point changes go through accounts, with their audit rows.
	res = f.as(roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: map[string]any{
		"code": "P-NUEVO", "name": "Pozo Nuevo", "kind": "surface", "timezone": "America/Punta_Arenas", "latitude": -53.1, "longitude": -70.9}})
	require.Equal(t, http.StatusCreated, res.status, "%s", res)
	require.Equal(t, "/api/points/P-NUEVO/", res.header.Get("Location"))
	require.Equal(t, true, res.json(t)["active"], "active by default")
	res = f.as(roleAdmin, req{method: http.MethodPatch, path: "/api/points/P-NUEVO/", body: map[string]any{"latitude": nil, "active": false}})
	require.Equal(t, http.StatusOK, res.status, "%s", res)
	body := res.json(t)
	require.Nil(t, body["latitude"])
	require.Equal(t, -70.9, body["longitude"])
	require.Equal(t, false, body["active"])
	require.Equal(t, "surface", body["kind"])
	res = f.as(roleAdmin, req{method: http.MethodPatch, path: "/api/points/P-NUEVO/", body: map[string]any{"kind": "lake"}})
	require.Equal(t, http.StatusUnprocessableEntity, res.status, "%s", res)
	require.Equal(t, "kind", res.json(t)["param"])
	res = f.as(roleAdmin, req{method: http.MethodPost, path: "/api/points/", body: map[string]any{"code": "P-NUEVO"}})
	require.Equal(t, http.StatusConflict, res.status)
	require.Equal(t, "code", res.json(t)["param"])
	res = f.as(roleAdmin, req{method: http.MethodDelete, path: "/api/points/" + pointOwn + "/"})
	require.Equal(t, http.StatusConflict, res.status, "a point with devices stays: %s", res)

	// Moving a device needs manage_devices on both points.
	res = f.as(rolePrimary, req{method: http.MethodPatch, path: "/api/devices/" + deviceOwn + "/", body: map[string]any{"point": pointForeign}})
	require.Equal(t, http.StatusNotFound, res.status, "%s", res)
	require.Equal(t, "point", res.json(t)["param"])
	res = f.as(roleAdmin, req{method: http.MethodPatch, path: "/api/devices/" + deviceOwn + "/", body: map[string]any{"point": "P-NUEVO"}})
	require.Equal(t, http.StatusOK, res.status, "%s", res)
	require.Equal(t, "P-NUEVO", res.json(t)["point"])
	require.Equal(t, "generic-json", res.json(t)["provider"], "absent fields stay")

	// Metrics are labelled by route pattern, never by path.
	mfs, err := f.metrics.Gather()
	require.NoError(t, err)
	var routes []string
	for _, mf := range mfs {
		if mf.GetName() != "stackvps_api_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" {
					routes = append(routes, l.GetValue())
				}
			}
		}
	}
	require.Contains(t, routes, "/api/points/{code}") // chi drops the trailing slash
	require.Contains(t, routes, "unmatched")
	for _, r := range routes {
		require.NotContains(t, r, pointOwn)
	}
}

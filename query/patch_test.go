package query_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// patchAll sends every body as a PATCH of path at once and returns the
// statuses, in the order of bodies.
func (f *fixture) patchAll(path string, bodies []map[string]any) []int {
	f.t.Helper()
	statuses := make([]int, len(bodies))
	errs := make([]error, len(bodies))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Go(func() {
			js, err := json.Marshal(b)
			if err != nil {
				errs[i] = err
				return
			}
			rq, err := http.NewRequestWithContext(f.ctx, http.MethodPatch, f.srv.URL+path, bytes.NewReader(js))
			if err != nil {
				errs[i] = err
				return
			}
			rq.Header.Set("Authorization", "Token "+f.tokens[roleAdmin])
			rq.Header.Set("Content-Type", "application/json")
			<-start
			res, err := http.DefaultClient.Do(rq)
			if err != nil {
				errs[i] = err
				return
			}
			res.Body.Close()
			statuses[i] = res.StatusCode
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(f.t, err)
	}
	return statuses
}

// Patches of different fields of one point, or one device, sent at once
// all take effect: each is applied to the row as stored, under its lock,
// not to a copy read before another patch committed (the lost update the
// handlers had when they read the row, patched it and wrote every field
// back).
func TestConcurrentPatchesKeepEveryFieldIntegration(t *testing.T) {
	f := newFixture(t)
	pointPatches := []map[string]any{
		{"name": "Pozo renombrado"}, {"kind": "surface"}, {"timezone": "America/Punta_Arenas"},
		{"latitude": -33.45}, {"longitude": -70.66}, {"active": false},
	}
	for round := range 8 {
		code := f.newPoint(true)
		path := "/api/points/" + code + "/"
		for i, st := range f.patchAll(path, pointPatches) {
			require.Equal(t, http.StatusOK, st, "round %d, patch %v", round, pointPatches[i])
		}
		got := f.as(roleAdmin, req{method: http.MethodGet, path: path})
		require.Equal(t, http.StatusOK, got.status, got.String())
		require.Equal(t, map[string]any{
			"code": code, "name": "Pozo renombrado", "kind": "surface", "timezone": "America/Punta_Arenas",
			"latitude": -33.45, "longitude": -70.66, "active": false,
		}, fields(got.json(t), "code", "name", "kind", "timezone", "latitude", "longitude", "active"), "round %d: a patch was lost", round)

		other := f.newPoint(true)
		dev := f.newDevice(code)
		devPath := "/api/devices/" + dev + "/"
		devPatches := []map[string]any{{"point": other}, {"provider": "acme-registers"}, {"active": false}}
		for i, st := range f.patchAll(devPath, devPatches) {
			require.Equal(t, http.StatusOK, st, "round %d, device patch %v", round, devPatches[i])
		}
		got = f.as(roleAdmin, req{method: http.MethodGet, path: "/api/points/" + other + "/devices/"})
		require.Equal(t, http.StatusOK, got.status, got.String())
		var list struct{ Results []map[string]any }
		require.NoError(t, json.Unmarshal(got.body, &list))
		require.Len(t, list.Results, 1, "round %d: the device did not move", round)
		require.Equal(t, map[string]any{"id": dev, "point": other, "provider": "acme-registers", "active": false},
			fields(list.Results[0], "id", "point", "provider", "active"), fmt.Sprintf("round %d: a device patch was lost", round))
	}
}

// fields is m restricted to keys.
func fields(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

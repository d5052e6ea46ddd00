package regulator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/regulator"
)

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})

	st, raw, _ := reg.do(t, http.MethodGet, "/_admin/healthz", "", "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "ok\n", string(raw))

	// Faults: one object, then an array; listed with their counts.
	st, raw, _ = reg.do(t, http.MethodPost, "/_admin/faults", "", `{"kind":"server_error","count":1}`)
	require.Equal(t, http.StatusOK, st, string(raw))
	st, raw, _ = reg.do(t, http.MethodPost, "/_admin/faults", "", `[{"kind":"slow","delay":"10ms","endpoint":"dga"},{"kind":"rate_limit","probability":0.5}]`)
	require.Equal(t, http.StatusOK, st, string(raw))
	var fr regulator.FaultsReport
	require.NoError(t, json.Unmarshal(raw, &fr))
	require.Len(t, fr.Faults, 3)
	require.Equal(t, regulator.FaultStatus{ID: 1, Fault: regulator.Fault{Kind: regulator.FaultServerError, Count: 1}, Remaining: 1}, fr.Faults[0])
	require.Equal(t, -1, fr.Faults[1].Remaining)
	require.JSONEq(t, `{"id":2,"fault":{"kind":"slow","endpoint":"dga","delay":"10ms"},"fired":0,"remaining":-1}`, mustJSON(t, fr.Faults[1]))

	st, raw, _ = reg.do(t, http.MethodPost, "/_admin/faults", "", `{"kind":"explode"}`)
	require.Equal(t, http.StatusBadRequest, st)
	require.Contains(t, string(raw), "kind: unknown fault kind")

	st, _, _ = reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusServiceUnavailable, st)
	require.Equal(t, http.StatusOK, reg.get(t, "/_admin/faults", &fr))
	require.Len(t, fr.Faults, 2, "the counted fault is spent")

	st, raw, _ = reg.do(t, http.MethodDelete, "/_admin/faults", "", "")
	require.Equal(t, http.StatusOK, st)
	require.NoError(t, json.Unmarshal(raw, &fr))
	require.Equal(t, 2, fr.Cleared)
	require.Empty(t, fr.Faults)

	// Obras and SMA users.
	st, raw, _ = reg.do(t, http.MethodPost, "/_admin/obras", "", `{"OB-0602-9":{"rut_usuario":"11111111-1"}}`)
	require.Equal(t, http.StatusOK, st, string(raw))
	st, a, _ := reg.postDGA(t, subterranea("OB-0602-9", "13:00:00"))
	require.Equal(t, http.StatusBadRequest, st)
	require.Equal(t, "Usuario no es el informante registrado en la Obra", a.Message)
	st, _, _ = reg.do(t, http.MethodPost, "/_admin/obras", "", `{"OB-1":{}}`)
	require.Equal(t, http.StatusBadRequest, st)
	st, _, _ = reg.do(t, http.MethodPost, "/_admin/obras", "", `{"OB-0602-9":{"rut":"x"}}`)
	require.Equal(t, http.StatusBadRequest, st, "unknown keys are refused")

	tok := reg.token(t, "anyone", "anything")
	st, _, _ = reg.do(t, http.MethodPost, "/_admin/sma-users", "", `{"76111222-3":"secreto"}`)
	require.Equal(t, http.StatusOK, st)
	st, _, _ = reg.do(t, http.MethodPost, pathAuth, "", `{"usuario":"anyone","password":"anything"}`)
	require.Equal(t, http.StatusUnauthorized, st, "registered users only from now on")
	st, raw, _ = reg.do(t, http.MethodPost, "/_admin/tokens/expire", "", "")
	require.Equal(t, http.StatusOK, st)
	require.JSONEq(t, `{"expired":1}`, string(raw))
	st, _ = reg.postSMA(t, tok, "1", "1", smaBody("d", estampa, "Q=1", "VA=1"))
	require.Equal(t, http.StatusUnauthorized, st)

	// Counts.
	st, _, _ = reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusOK, st)
	st, _, _ = reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusBadRequest, st)
	var ar regulator.AcceptedReport
	require.Equal(t, http.StatusOK, reg.get(t, "/_admin/accepted", &ar))
	require.Equal(t, 1, ar.Accepted)
	require.Equal(t, 5, ar.Requests, "3 of OB-0602-7 13:00 (the 503 included), 1 of OB-0602-9, 1 of the SMA slot")
	require.Empty(t, ar.Violations)
	var keys []string
	for _, s := range ar.Slots {
		keys = append(keys, fmt.Sprintf("%s:%d/%d", s.Key, s.Accepted, s.Requests))
	}
	require.Equal(t, []string{"1|1|d|2026-05-17T14:05:00:0/1", "OB-0602-7|2026-06-11|13:00:00:1/3", "OB-0602-9|2026-06-11|13:00:00:0/1"}, keys)

	// Requests, with since.
	var rr regulator.RequestsReport
	require.Equal(t, http.StatusOK, reg.get(t, "/_admin/requests", &rr))
	require.Equal(t, int64(len(rr.Requests)), rr.Last)
	require.Zero(t, rr.Dropped)
	for _, r := range rr.Requests {
		require.NotContains(t, r.Body, "clave")
		require.NotContains(t, r.Body, "anything")
		require.NotContains(t, r.Header["Authorization"], tok)
	}
	require.Contains(t, rr.Requests[0].Body, `"password":"****"`)
	require.Equal(t, "OB-0602-7", rr.Requests[0].Header["Codigoobra"])
	require.Equal(t, http.StatusOK, reg.get(t, fmt.Sprintf("/_admin/requests?since=%d", rr.Last-1), &rr))
	require.Len(t, rr.Requests, 1)
	require.Equal(t, "duplicate", rr.Requests[0].Outcome)
	require.Equal(t, http.StatusBadRequest, reg.get(t, "/_admin/requests?since=x", nil))

	// Reset forgets everything but the configuration.
	st, _, _ = reg.do(t, http.MethodPost, "/_admin/reset", "", "")
	require.Equal(t, http.StatusOK, st)
	require.Empty(t, reg.Slots())
	require.Empty(t, reg.Requests())
	st, _, _ = reg.postDGA(t, subterranea("OB-0602-9", "13:00:00"))
	require.Equal(t, http.StatusOK, st, "runtime registrations are forgotten")
}

func TestRequestLogBounded(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{MaxRequests: 3})
	for i := range 5 {
		st, _, _ := reg.postDGA(t, subterranea("OB-0602-7", fmt.Sprintf("%02d:00:00", i)))
		require.Equal(t, http.StatusOK, st)
	}
	reqs := reg.Requests()
	require.Len(t, reqs, 3)
	require.Equal(t, int64(3), reqs[0].Seq)
	var rr regulator.RequestsReport
	reg.get(t, "/_admin/requests", &rr)
	require.Equal(t, int64(2), rr.Dropped)
	require.Len(t, reg.Accepted(), 5, "counts are not bounded by the log")
}

// TestConcurrent submits every slot from several goroutines at once, with
// admin reads and fault changes in between: each slot is accepted exactly
// once and every request is counted. Run with -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{Seed: 3})
	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultServerError, Probability: 0.2}))
	tok := reg.token(t, "u", "p")
	const obras, hours, senders = 4, 6, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for o := range obras {
		for h := range hours {
			for range senders {
				wg.Go(func() {
					st, err := postRaw(t, reg, subterranea(fmt.Sprintf("OB-0602-%d", o), fmt.Sprintf("%02d:00:00", h)))
					if err != nil {
						t.Error(err)
						return
					}
					st2, _, _ := reg.do(t, http.MethodPost, smaPath("1", fmt.Sprint(o)), tok,
						smaBody("d", fmt.Sprintf("2026-05-17T%02d:00:00", h), "Q=1", "VA=2"))
					mu.Lock()
					statuses[st]++
					statuses[st2]++
					mu.Unlock()
				})
			}
		}
	}
	wg.Go(func() {
		for range 20 {
			_ = reg.AcceptedReport()
			_ = reg.Requests()
			_ = reg.Faults()
		}
	})
	wg.Wait()
	reg.ClearFaults()
	// Resend everything once the faults are gone, so every slot is accepted.
	for o := range obras {
		for h := range hours {
			_, err := postRaw(t, reg, subterranea(fmt.Sprintf("OB-0602-%d", o), fmt.Sprintf("%02d:00:00", h)))
			require.NoError(t, err)
			reg.do(t, http.MethodPost, smaPath("1", fmt.Sprint(o)), tok, smaBody("d", fmt.Sprintf("2026-05-17T%02d:00:00", h), "Q=1", "VA=2"))
		}
	}
	acc := reg.Accepted()
	require.Len(t, acc, 2*obras*hours)
	for k, n := range acc {
		require.Equal(t, 1, n, k)
	}
	require.Empty(t, reg.Violations())
	total := 0
	for _, s := range reg.Slots() {
		require.Equal(t, senders+1, s.Requests, s.Key)
		require.Equal(t, s.Requests-1, s.Duplicates+countFailures(reg, s.Key), s.Key)
		total += s.Requests
	}
	require.Equal(t, 2*obras*hours*(senders+1), total)
	require.Positive(t, statuses[http.StatusServiceUnavailable], "some requests failed: %v", statuses)
	require.Len(t, reg.Requests(), 2*obras*hours*(senders+1)+1, "every request logged (and the auth)")
}

// countFailures counts the logged requests naming key that were answered
// with a 5xx.
func countFailures(reg *testRegulator, key string) int {
	n := 0
	for _, r := range reg.Requests() {
		if r.Outcome == "server_error" && strings.Contains(strings.Join(r.Keys, ","), key) {
			n++
		}
	}
	return n
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

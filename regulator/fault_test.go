package regulator_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/regulator"
)

func TestFaultServerError(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultServerError, Count: 2}))
	m := subterranea("OB-0602-7", "13:00:00")
	for range 2 {
		st, a, _ := reg.postDGA(t, m)
		require.Equal(t, http.StatusServiceUnavailable, st)
		require.NotEqual(t, "00", a.Status)
		require.Empty(t, reg.Accepted(), "nothing is stored before a 5xx")
	}
	require.Empty(t, reg.Faults(), "a counted fault goes away once spent")
	st, _, _ := reg.postDGA(t, m)
	require.Equal(t, http.StatusOK, st)
	sl, _ := reg.Slot(regulator.DGAKey("OB-0602-7", "2026-06-11", "13:00:00"))
	require.Equal(t, 3, sl.Requests)
	require.Equal(t, 1, sl.Accepted)

	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultServerError, Status: 502}))
	for range 3 {
		st, _, _ := reg.postDGA(t, subterranea("OB-0602-7", "14:00:00"))
		require.Equal(t, http.StatusBadGateway, st, "a fault without count fires until cleared")
	}
	require.Equal(t, []regulator.FaultStatus{{ID: 2, Fault: regulator.Fault{Kind: regulator.FaultServerError, Status: 502}, Fired: 3, Remaining: -1}},
		reg.Faults())
	require.Equal(t, 1, reg.ClearFaults())
	st, _, _ = reg.postDGA(t, subterranea("OB-0602-7", "14:00:00"))
	require.Equal(t, http.StatusOK, st)

	reqs := reg.Requests()
	require.Equal(t, regulator.FaultServerError, reqs[0].Fault)
	require.Equal(t, "server_error", reqs[0].Outcome)
	require.Equal(t, regulator.FaultKind(""), reqs[len(reqs)-1].Fault)
}

func TestFaultRateLimit(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{Faults: []regulator.Fault{
		{Kind: regulator.FaultRateLimit, Count: 1, RetryAfter: 1500 * time.Millisecond},
	}})
	st, a, hdr := reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Equal(t, "2", hdr.Get("Retry-After"))
	require.NotEqual(t, "00", a.Status)
	require.Empty(t, reg.Accepted())
	st, _, _ = reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusOK, st)
}

func TestFaultSlow(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultSlow, Count: 2, Delay: 300 * time.Millisecond}))

	start := time.Now()
	st, a, _ := reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusOK, st)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	require.Regexp(t, receiptRE, a.receipt(t))

	// A client that gives up first sees a timeout, but the data is stored.
	impatient := *reg
	impatient.client = &http.Client{Timeout: 50 * time.Millisecond}
	m := subterranea("OB-0602-7", "14:00:00")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, reg.URL+pathSub, bytes.NewReader(m.body()))
	require.NoError(t, err)
	req.Header.Set("codigoObra", m.obra)
	req.Header.Set("timeStampOrigen", m.timestamp)
	_, err = impatient.client.Do(req) //nolint:bodyclose // it fails
	require.Error(t, err)
	key := regulator.DGAKey("OB-0602-7", "2026-06-11", "14:00:00")
	require.Equal(t, 1, reg.Accepted()[key], "accepted before the slow answer")
	require.Eventually(t, func() bool { return lastRequest(reg).Outcome == "client_gone" }, 5*time.Second, 10*time.Millisecond)

	// The retry learns the receipt from the duplicate answer.
	st, a, _ = reg.postDGA(t, m)
	require.Equal(t, http.StatusBadRequest, st)
	sl, _ := reg.Slot(key)
	require.Equal(t, "Ya existe un registro en esa fecha, hora para la obra. Comprobante: "+sl.Receipts[0], a.Message)
}

func TestFaultHang(t *testing.T) {
	t.Parallel()
	t.Run("past the client timeout", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{Faults: []regulator.Fault{{Kind: regulator.FaultHang, Count: 1}}})
		reg.client = &http.Client{Timeout: 200 * time.Millisecond}
		m := subterranea("OB-0602-7", "13:00:00")
		_, err := postRaw(t, reg, m)
		require.Error(t, err)
		var ne net.Error
		require.True(t, errors.As(err, &ne) && ne.Timeout(), "a client timeout: %v", err)
		key := regulator.DGAKey("OB-0602-7", "2026-06-11", "13:00:00")
		require.Equal(t, map[string]int{key: 1}, reg.Accepted(), "stored although never answered")
		require.Eventually(t, func() bool { return lastRequest(reg).Outcome == "hung" }, 5*time.Second, 10*time.Millisecond)
		r := lastRequest(reg)
		require.Equal(t, 0, r.Status)
		require.Equal(t, regulator.FaultHang, r.Fault)
		require.Equal(t, reg.mustSlot(t, key).Receipts[0], r.Receipt)
	})
	t.Run("dropped after the delay", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{Faults: []regulator.Fault{{Kind: regulator.FaultHang, Delay: 100 * time.Millisecond}}})
		start := time.Now()
		_, err := postRaw(t, reg, subterranea("OB-0602-7", "13:00:00"))
		require.Error(t, err, "the connection is dropped without an answer")
		require.Less(t, time.Since(start), 5*time.Second)
		require.Len(t, reg.Accepted(), 1)
	})
	t.Run("released by Close", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{Faults: []regulator.Fault{{Kind: regulator.FaultHang}}})
		errc := make(chan error, 1)
		go func() {
			_, err := postRaw(t, reg, subterranea("OB-0602-7", "13:00:00"))
			errc <- err
		}()
		require.Eventually(t, func() bool { return len(reg.Accepted()) == 1 }, 5*time.Second, 10*time.Millisecond)
		reg.Close()
		select {
		case err := <-errc:
			require.Error(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not release the hung request")
		}
	})
}

func TestFaultTokenExpiry(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	tok := reg.token(t, "u", "p")
	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultTokenExpiry, Endpoint: regulator.EndpointSMA, Count: 1}))
	// A DGA request does not trigger an SMA-only fault.
	st, _, _ := reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusOK, st)
	body := smaBody("d", estampa, "Q=1", "VA=1")
	st, _ = reg.postSMA(t, tok, "1", "1", body)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Empty(t, slotsOf(reg, "sma"))
	st, _ = reg.postSMA(t, tok, "1", "1", body)
	require.Equal(t, http.StatusUnauthorized, st, "the token stays expired")
	tok = reg.token(t, "u", "p")
	st, _ = reg.postSMA(t, tok, "1", "1", body)
	require.Equal(t, http.StatusCreated, st, "renewing the token recovers")
}

func TestFaultDuplicate(t *testing.T) {
	t.Parallel()
	t.Run("dga", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{Faults: []regulator.Fault{{Kind: regulator.FaultDuplicate, Count: 1}}})
		m := subterranea("OB-0602-7", "13:00:00")
		st, a, _ := reg.postDGA(t, m)
		require.Equal(t, http.StatusBadRequest, st)
		require.Regexp(t, `^Ya existe un registro en esa fecha, hora para la obra\. Comprobante: [A-Za-z0-9]{32}$`, a.Message)
		key := regulator.DGAKey("OB-0602-7", "2026-06-11", "13:00:00")
		sl := reg.mustSlot(t, key)
		require.Equal(t, 1, sl.Accepted, "stored as if an earlier attempt had been")
		require.Equal(t, 1, sl.Duplicates)
		receipt := sl.Receipts[0]
		require.Contains(t, a.Message, receipt)
		q := url.Values{"codigoObra": {m.obra}, "numeroComprobante": {receipt}}
		require.Equal(t, http.StatusOK, reg.get(t, pathSub+"?"+q.Encode(), nil), "the receipt verifies")
		st, a, _ = reg.postDGA(t, m)
		require.Equal(t, http.StatusBadRequest, st)
		require.Contains(t, a.Message, receipt)
	})
	t.Run("sma", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{Faults: []regulator.Fault{{Kind: regulator.FaultDuplicate, Count: 1}}})
		tok := reg.token(t, "u", "p")
		st, a := reg.postSMA(t, tok, "1", "1", smaBody("d", estampa, "Q=1", "VA=1"))
		require.Equal(t, http.StatusOK, st)
		require.NotEmpty(t, a.IDVerificacion)
		sl := reg.mustSlot(t, regulator.SMAKey("1", "1", "d", estampa))
		require.Equal(t, 1, sl.Accepted)
		require.Equal(t, []string{a.IDVerificacion}, sl.Receipts)
	})
}

func TestFaultWrongInformantRejectNoReceipt(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	tok := reg.token(t, "u", "p")
	m := subterranea("OB-0602-7", "13:00:00")
	sma := smaBody("d", estampa, "Q=1", "VA=1")

	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultWrongInformant, Count: 2}))
	st, a, _ := reg.postDGA(t, m)
	require.Equal(t, http.StatusBadRequest, st)
	require.Equal(t, "Usuario no es el informante registrado en la Obra", a.Message)
	st, _ = reg.postSMA(t, tok, "1", "1", sma)
	require.Equal(t, http.StatusForbidden, st)
	require.Empty(t, reg.Accepted())

	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultReject, Count: 2, Status: 200, Message: "Fuera de plazo"}))
	st, a, _ = reg.postDGA(t, m)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "01", a.Status)
	require.Equal(t, "Fuera de plazo", a.Message)
	st, s := reg.postSMA(t, tok, "1", "1", sma)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "Fuera de plazo", s.Mensaje)
	require.Empty(t, s.IDVerificacion)
	require.Empty(t, reg.Accepted())

	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultNoReceipt, Count: 2}))
	st, a, _ = reg.postDGA(t, m)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "00", a.Status)
	require.Empty(t, a.Data, "no data.numeroComprobante")
	st, s = reg.postSMA(t, tok, "1", "1", sma)
	require.Equal(t, http.StatusCreated, st)
	require.Empty(t, s.IDVerificacion)
	require.Len(t, reg.Accepted(), 2, "accepted all the same")
	st, a, _ = reg.postDGA(t, m)
	require.Equal(t, http.StatusBadRequest, st)
	require.Contains(t, a.Message, reg.mustSlot(t, regulator.DGAKey("OB-0602-7", "2026-06-11", "13:00:00")).Receipts[0],
		"a resend recovers the receipt")
}

func TestFaultTargeting(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{Faults: []regulator.Fault{
		{Kind: regulator.FaultServerError, Match: "OB-0602-8|"},
		{Kind: regulator.FaultServerError, Endpoint: regulator.EndpointSMAAuth, Count: 1},
		{Kind: regulator.FaultServerError, Endpoint: regulator.EndpointDGAVerify, Count: 1},
	}})
	st, _, _ := reg.postDGA(t, subterranea("OB-0602-8", "13:00:00"))
	require.Equal(t, http.StatusServiceUnavailable, st, "matched")
	st, a, _ := reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusOK, st, "not matched")

	st, _, _ = reg.do(t, http.MethodPost, pathAuth, "", `{"usuario":"u","password":"p"}`)
	require.Equal(t, http.StatusServiceUnavailable, st, "auth targeted")
	tok := reg.token(t, "u", "p")
	st, _ = reg.postSMA(t, tok, "1", "1", smaBody("d", estampa, "Q=1", "VA=1"))
	require.Equal(t, http.StatusCreated, st, "submissions of SMA unaffected")

	q := "?codigoObra=OB-0602-7&numeroComprobante=" + a.receipt(t)
	require.Equal(t, http.StatusServiceUnavailable, reg.get(t, pathSub+q, nil))
	require.Equal(t, http.StatusOK, reg.get(t, pathSub+q, nil))
}

func TestFaultProbabilityIsSeeded(t *testing.T) {
	t.Parallel()
	pattern := func(seed uint64) []int {
		reg := newTestRegulator(t, regulator.Config{Seed: seed, Faults: []regulator.Fault{
			{Kind: regulator.FaultServerError, Probability: 0.5},
		}})
		var out []int
		for i := range 40 {
			st, _, _ := reg.postDGA(t, subterranea(fmt.Sprintf("OB-0602-%d", i), "13:00:00"))
			out = append(out, st)
		}
		return out
	}
	a, b := pattern(7), pattern(7)
	require.Equal(t, a, b, "the same seed gives the same failures")
	require.Contains(t, a, http.StatusOK)
	require.Contains(t, a, http.StatusServiceUnavailable)
	require.NotEqual(t, a, pattern(8))
}

func TestMinInterval(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	reg := newTestRegulator(t, regulator.Config{MinInterval: 10 * time.Second, Now: clock.Now})
	st, _, _ := reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusOK, st)
	clock.Add(2500 * time.Millisecond)
	st, _, hdr := reg.postDGA(t, subterranea("OB-0602-7", "14:00:00"))
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Equal(t, "8", hdr.Get("Retry-After"), "7.5s rounded up")
	other := subterranea("OB-0602-7", "14:00:00")
	other.empresa = "11111111-1"
	st, _, _ = reg.postDGA(t, other)
	require.Equal(t, http.StatusOK, st, "another Centro de Control is not limited")
	clock.Add(7500 * time.Millisecond)
	st, _, _ = reg.postDGA(t, subterranea("OB-0602-7", "15:00:00"))
	require.Equal(t, http.StatusOK, st)

	// SMA: per usuario of the token.
	tok := reg.token(t, "u", "p")
	st, _ = reg.postSMA(t, tok, "1", "1", smaBody("d", estampa, "Q=1", "VA=1"))
	require.Equal(t, http.StatusCreated, st)
	st, _ = reg.postSMA(t, tok, "1", "1", smaBody("d", "2026-05-17T14:10:00", "Q=1", "VA=1"))
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Len(t, slotsOf(reg, "sma"), 1)
	require.Len(t, reg.Accepted(), 4)
}

func TestFaultValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		f    regulator.Fault
		want string
	}{
		{regulator.Fault{Kind: "explode"}, "kind"},
		{regulator.Fault{Kind: regulator.FaultServerError, Endpoint: "x"}, "endpoint"},
		{regulator.Fault{Kind: regulator.FaultDuplicate, Endpoint: regulator.EndpointSMAAuth}, "endpoint"},
		{regulator.Fault{Kind: regulator.FaultServerError, Count: -1}, "count"},
		{regulator.Fault{Kind: regulator.FaultServerError, Probability: 1.5}, "probability"},
		{regulator.Fault{Kind: regulator.FaultServerError, Status: 42}, "status"},
		{regulator.Fault{Kind: regulator.FaultSlow}, "delay"},
		{regulator.Fault{Kind: regulator.FaultRateLimit, RetryAfter: -time.Second}, "retry_after"},
	}
	for _, c := range cases {
		err := c.f.Validate()
		require.Error(t, err, "%+v", c.f)
		require.Contains(t, err.Error(), c.want+":")
	}
	require.Error(t, newTestRegulator(t, regulator.Config{}).AddFaults(cases[0].f))
	require.PanicsWithValue(t, `regulator: config.Faults[0]: kind: unknown fault kind "explode"`, func() {
		regulator.New(regulator.Config{Faults: []regulator.Fault{cases[0].f}})
	})

	faults, err := regulator.ParseFaults([]byte(`{"kind":"slow","delay":1.5,"match":"OB-"}`))
	require.NoError(t, err)
	require.Equal(t, []regulator.Fault{{Kind: regulator.FaultSlow, Delay: 1500 * time.Millisecond, Match: "OB-"}}, faults)
	faults, err = regulator.ParseFaults([]byte(` [{"kind":"hang","count":1},{"kind":"rate_limit","retry_after":"3s","endpoint":"sma"}]`))
	require.NoError(t, err)
	require.Equal(t, []regulator.Fault{{Kind: regulator.FaultHang, Count: 1},
		{Kind: regulator.FaultRateLimit, RetryAfter: 3 * time.Second, Endpoint: regulator.EndpointSMA}}, faults)
	for _, bad := range []string{`{"kind":"slow"}`, `{"kind":"hang","typo":1}`, `[{"kind":"hang","delay":"soon"}]`, `"hang"`} {
		_, err := regulator.ParseFaults([]byte(bad))
		require.Error(t, err, bad)
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	srv := regulator.New(regulator.Config{Faults: []regulator.Fault{{Kind: regulator.FaultHang}}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	reg := &testRegulator{Server: srv, URL: "http://" + ln.Addr().String(), client: &http.Client{Timeout: 10 * time.Second}}
	require.Equal(t, http.StatusOK, reg.get(t, "/_admin/healthz", nil))
	go func() { _, _ = postRaw(t, reg, subterranea("OB-0602-7", "13:00:00")) }()
	require.Eventually(t, func() bool { return len(srv.Accepted()) == 1 }, 5*time.Second, 10*time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
		require.Less(t, time.Since(start), 4*time.Second, "the hung request does not hold the shutdown")
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// postRaw posts m and returns the status or the client's error.
func postRaw(t *testing.T, reg *testRegulator, m measurement) (int, error) {
	req, err := http.NewRequestWithContext(context.WithoutCancel(t.Context()), http.MethodPost, reg.URL+m.path, bytes.NewReader(m.body()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("codigoObra", m.obra)
	req.Header.Set("timeStampOrigen", m.timestamp)
	resp, err := reg.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, nil
}

func lastRequest(reg *testRegulator) regulator.Request {
	reqs := reg.Requests()
	if len(reqs) == 0 {
		return regulator.Request{}
	}
	return reqs[len(reqs)-1]
}

func (r *testRegulator) mustSlot(t *testing.T, key string) regulator.Slot {
	t.Helper()
	sl, ok := r.Slot(key)
	require.True(t, ok, "slot %s", key)
	return sl
}

func slotsOf(reg *testRegulator, api string) []regulator.Slot {
	var out []regulator.Slot
	for _, s := range reg.Slots() {
		if s.API == api && s.Accepted > 0 {
			out = append(out, s)
		}
	}
	return out
}

package compliance_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
)

// dgaAt returns the built-in dga-subterraneas pointed at url, with a short
// timeout.
func dgaAt(t *testing.T, url string) compliance.Source {
	src := dgaSource(t)
	src.Endpoint = url + "/api/v1/mediciones/subterraneas"
	src.RequestTimeout = 300 * time.Millisecond
	return src
}

func TestDGASendClassification(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		delay      time.Duration
		kind       compliance.OutcomeKind
		receipt    string
		reason     string
		retryAfter time.Duration
	}{
		{name: "accepted", status: 200,
			body: `{"status":"00","message":"Medición registrada","data":{"numeroComprobante":"ZMmrvqSV12WE5aKz5WJxkCOyu13h5pha"}}`,
			kind: compliance.Confirmed, receipt: "ZMmrvqSV12WE5aKz5WJxkCOyu13h5pha"},
		{name: "accepted without comprobante needs review", status: 200, body: `{"status":"00","message":"ok","data":{}}`,
			kind: compliance.Confirmed, reason: "needs manual review"},
		{name: "accepted with null data", status: 200, body: `{"status":"00","message":"ok","data":null}`,
			kind: compliance.Confirmed, reason: "needs manual review"},
		{name: "duplicate with comprobante", status: 400,
			body: `{"status":"01","message":"Ya existe un registro en esa fecha, hora para la obra. Comprobante: AbC123xyz"}`,
			kind: compliance.Confirmed, receipt: "AbC123xyz", reason: "duplicate"},
		{name: "duplicate, other spacing and case", status: 400,
			body: `{"message":"YA EXISTE un registro en esa fecha, hora para la obra. comprobante:XYZ789"}`,
			kind: compliance.Confirmed, receipt: "XYZ789"},
		{name: "duplicate without comprobante", status: 400, body: `{"status":"01","message":"Ya existe un registro en esa fecha, hora para la obra."}`,
			kind: compliance.Confirmed, reason: "needs review"},
		{name: "informant mismatch", status: 400, body: `{"status":"01","message":"Usuario no es el informante registrado en la Obra"}`,
			kind: compliance.RejectedTerminal, reason: "informant mismatch"},
		{name: "business rejection in a 200", status: 200, body: `{"status":"99","message":"Formato de caudal inválido"}`,
			kind: compliance.Rejected, reason: "Formato de caudal inválido"},
		{name: "business rejection in a 400", status: 400, body: `{"status":"01","message":"Obra no existe"}`,
			kind: compliance.Rejected, reason: "Obra no existe"},
		{name: "401 is a rejection", status: 401, body: `not json`, kind: compliance.Rejected, reason: "HTTP 401: not json"},
		{name: "500", status: 500, body: `upstream down`, kind: compliance.Transient, reason: "HTTP 500"},
		{name: "503 with duplicate text is still transient", status: 503, body: `{"message":"Ya existe Comprobante: X"}`, kind: compliance.Transient},
		{name: "429 with Retry-After", status: 429, header: map[string]string{"Retry-After": "120"},
			kind: compliance.RateLimited, retryAfter: 2 * time.Minute},
		{name: "slow answer past the timeout is unknown", status: 200, delay: time.Second,
			body: `{"status":"00","data":{"numeroComprobante":"late"}}`, kind: compliance.Unknown, reason: "may have arrived"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.Add(1)
				assert.Equal(t, "/api/v1/mediciones/subterraneas", r.URL.Path)
				assert.Equal(t, "OB-0602-7", r.Header.Get("codigoObra"))
				b, _ := io.ReadAll(r.Body)
				assert.Contains(t, string(b), `"password":"clave-informante"`)
				if c.delay > 0 {
					select {
					case <-time.After(c.delay):
					case <-r.Context().Done():
						return
					}
				}
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.body)
			}))
			defer srv.Close()
			p := compliance.NewProtocols(srv.Client())[compliance.ProtocolDGA]
			src := dgaAt(t, srv.URL)
			req, err := p.Prepare(context.Background(), src, dgaSlot(), time.Now())
			require.NoError(t, err)
			o := p.Send(context.Background(), src, dgaSlot(), req)
			require.Equal(t, c.kind, o.Kind, "reason: %s", o.Reason)
			require.Equal(t, c.receipt, o.Receipt)
			require.Contains(t, o.Reason, c.reason)
			require.Equal(t, c.retryAfter, o.RetryAfter)
			require.EqualValues(t, 1, got.Load(), "exactly one request")
			require.Positive(t, o.Duration)
			if c.kind != compliance.Unknown {
				require.Equal(t, c.status, o.HTTPStatus)
				require.Equal(t, c.body, string(o.Response), "raw response kept")
			}
		})
	}
}

func TestDGASendConnectFailureIsTransient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	p := compliance.NewProtocols(nil)[compliance.ProtocolDGA]
	src := dgaAt(t, "http://"+addr)
	req, err := p.Prepare(context.Background(), src, dgaSlot(), time.Now())
	require.NoError(t, err)
	o := p.Send(context.Background(), src, dgaSlot(), req)
	require.Equal(t, compliance.Transient, o.Kind, o.Reason)
	require.Contains(t, o.Reason, "not sent")
}

func TestDGASendConnectionDroppedAfterWriteIsUnknown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		assert.NoError(t, err)
		_ = conn.Close()
	}))
	defer srv.Close()
	p := compliance.NewProtocols(srv.Client())[compliance.ProtocolDGA]
	src := dgaAt(t, srv.URL)
	req, err := p.Prepare(context.Background(), src, dgaSlot(), time.Now())
	require.NoError(t, err)
	o := p.Send(context.Background(), src, dgaSlot(), req)
	require.Equal(t, compliance.Unknown, o.Kind, o.Reason)
}

func TestDGAResponseCapped(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(502)
		_, _ = io.WriteString(w, big)
	}))
	defer srv.Close()
	p := compliance.NewProtocols(srv.Client())[compliance.ProtocolDGA]
	src := dgaAt(t, srv.URL)
	req, err := p.Prepare(context.Background(), src, dgaSlot(), time.Now())
	require.NoError(t, err)
	o := p.Send(context.Background(), src, dgaSlot(), req)
	require.Equal(t, compliance.Transient, o.Kind)
	require.Len(t, o.Response, compliance.MaxResponseBytes)
}

func TestDGAVerify(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, http.MethodGet, r.Method)
		assert.Equal(t, "OB-0602-7", r.URL.Query().Get("codigoObra"))
		switch r.URL.Query().Get("numeroComprobante") {
		case "good":
			_, _ = io.WriteString(w, `{"status":"00","message":"","data":{"fechaMedicion":"11-06-2026","horaMedicion":"13:00:00","caudal":"15.31","totalizador":"1010","nivelFreaticoDelPozo":"9.85"}}`)
		case "down":
			w.WriteHeader(503)
		default:
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"status":"01","message":"Comprobante no encontrado"}`)
		}
	}))
	defer srv.Close()
	p := compliance.NewProtocols(srv.Client())[compliance.ProtocolDGA]
	v, ok := p.(compliance.Verifier)
	require.True(t, ok, "dga-mee implements Verifier")
	src := dgaAt(t, srv.URL)
	o := v.Verify(context.Background(), src, dgaSlot(), "good")
	require.Equal(t, compliance.Confirmed, o.Kind, o.Reason)
	require.Equal(t, "good", o.Receipt)
	o = v.Verify(context.Background(), src, dgaSlot(), "nope")
	require.Equal(t, compliance.Rejected, o.Kind)
	require.Contains(t, o.Reason, "no encontrado")
	o = v.Verify(context.Background(), src, dgaSlot(), "down")
	require.Equal(t, compliance.Transient, o.Kind)
}

func TestClassifyDGARetryAfterDate(t *testing.T) {
	h := http.Header{}
	h.Set("Retry-After", time.Now().Add(90*time.Second).UTC().Format(http.TimeFormat))
	o := compliance.ClassifyDGA(429, h, nil)
	require.Equal(t, compliance.RateLimited, o.Kind)
	require.InDelta(t, 90, o.RetryAfter.Seconds(), 2)
}

func FuzzClassifyDGA(f *testing.F) {
	for _, seed := range []struct {
		status int
		body   string
	}{
		{200, `{"status":"00","message":"ok","data":{"numeroComprobante":"ZMmrvqSV12WE5aKz5WJxkCOyu13h5pha"}}`},
		{200, `{"status":"00","data":{"numeroComprobante":123}}`},
		{200, `{"status":"00","data":[]}`},
		{400, `{"message":"Ya existe un registro en esa fecha, hora para la obra. Comprobante: abc"}`},
		{400, `{"message":"Usuario no es el informante registrado en la Obra"}`},
		{200, `{"status":"99","message":"x"}`},
		{429, ``}, {500, `oops`}, {302, `{}`}, {200, `null`}, {200, `{"status":00}`},
	} {
		f.Add(seed.status, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		o := compliance.ClassifyDGA(status, http.Header{}, body)
		switch o.Kind {
		case compliance.Confirmed, compliance.Rejected, compliance.RejectedTerminal, compliance.Transient, compliance.RateLimited:
		default:
			t.Fatalf("kind %q for HTTP %d %q", o.Kind, status, body)
		}
		if o.Kind == compliance.Confirmed && status >= 500 {
			t.Fatalf("a 5xx confirmed: %q", body)
		}
		if o.Kind == compliance.Confirmed && o.Receipt == "" && o.Reason == "" {
			t.Fatalf("confirmed without receipt must say why: %q", body)
		}
		if o.Kind != compliance.Confirmed && o.Receipt != "" {
			t.Fatalf("receipt on a %s outcome", o.Kind)
		}
		if o.HTTPStatus != status || string(o.Response) != string(body) {
			t.Fatal("status and raw response must be kept")
		}
	})
}

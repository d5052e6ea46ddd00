package compliance_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
)

func smaSlot() compliance.Slot {
	return compliance.Slot{
		ID: 2, Point: "canal-1", At: utc("2026-05-17T18:00:00Z"),
		Values:      compliance.Values{Flow: f(42.5), Totalizer: f(42500.7)},
		Params:      compliance.Params{UF: "1234", Process: "55", Device: "12180", Frequency: "hourly"},
		Credentials: compliance.Credentials{Username: "76086428-5", Password: "sma-pass"},
	}
}

func TestSMAPrepare(t *testing.T) {
	p := compliance.NewProtocols(nil)[compliance.ProtocolSMA]
	src := builtin(t, compliance.SourceSMA)
	req, err := p.Prepare(context.Background(), src, smaSlot(), time.Now())
	require.NoError(t, err)
	require.Equal(t, "POST", req.Method)
	require.Equal(t, "https://conexiones.sma.gob.cl/api/v1/ufs/1234/procesos/55/registros", req.URL)
	require.Empty(t, req.Header.Get("Authorization"), "the token is added by Send")
	// 18:00 UTC on 17 May 2026 is 14:00 in Santiago (UTC-4 in winter).
	require.JSONEq(t, `[{"dispositivoId":"12180","parametros":[
		{"nombre":"Q","valor":"42.50","unidad":"l/s","estampaTiempo":"2026-05-17T14:00:00"},
		{"nombre":"VA","valor":"42500","unidad":"m3","estampaTiempo":"2026-05-17T14:00:00"}]}]`, string(req.Body))
	require.JSONEq(t, string(req.Body), string(req.Redacted))
	require.NotContains(t, string(req.Redacted), "sma-pass")

	slot := smaSlot()
	slot.At = utc("2026-01-17T18:00:00Z") // summer: UTC-3
	req, err = p.Prepare(context.Background(), src, slot, time.Now())
	require.NoError(t, err)
	require.Contains(t, string(req.Body), `"estampaTiempo":"2026-01-17T15:00:00"`)

	for name, mut := range map[string]func(*compliance.Slot){
		"missing totalizer": func(s *compliance.Slot) { s.Values.Totalizer = nil },
		"negative flow":     func(s *compliance.Slot) { s.Values.Flow = f(-2) },
		"no device":         func(s *compliance.Slot) { s.Params.Device = "" },
		"no credentials":    func(s *compliance.Slot) { s.Credentials = compliance.Credentials{} },
	} {
		slot := smaSlot()
		mut(&slot)
		_, err := p.Prepare(context.Background(), src, slot, time.Now())
		require.ErrorIs(t, err, compliance.ErrInvalid, name)
	}
}

// fakeSMA is an SMA API: /auth hands out tokens, /ufs/.../registros
// answers with the next scripted response when the bearer is a live token.
type fakeSMA struct {
	t      *testing.T
	mu     sync.Mutex
	live   map[string]bool
	n      int
	auths  atomic.Int32
	posts  atomic.Int32
	authFn func(w http.ResponseWriter) bool // true: handled
	postFn func(w http.ResponseWriter, r *http.Request)
	jwtExp *time.Time
	refuse bool // 401 every post
	delay  time.Duration
}

func (s *fakeSMA) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/api/v1/auth":
		s.auths.Add(1)
		var body map[string]string
		assert.NoError(s.t, json.NewDecoder(r.Body).Decode(&body))
		assert.Equal(s.t, "76086428-5", body["usuario"])
		assert.Equal(s.t, "sma-pass", body["password"])
		if s.authFn != nil && s.authFn(w) {
			return
		}
		s.mu.Lock()
		s.n++
		tok := fmt.Sprintf("tok-%d", s.n)
		if s.jwtExp != nil {
			claims, _ := json.Marshal(map[string]any{"exp": s.jwtExp.Unix(), "n": s.n})
			tok = "eyJhbGciOiJIUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(claims) + ".sig"
		}
		s.live[tok] = true
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	case strings.HasPrefix(r.URL.Path, "/api/v1/ufs/1234/procesos/55/registros"):
		s.posts.Add(1)
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		ok := s.live[tok] && !s.refuse
		s.mu.Unlock()
		if !ok {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"mensaje":"token inválido"}`)
			return
		}
		if s.delay > 0 {
			select {
			case <-time.After(s.delay):
			case <-r.Context().Done():
				return
			}
		}
		if s.postFn != nil {
			s.postFn(w, r)
			return
		}
		w.WriteHeader(201)
		_, _ = io.WriteString(w, `{"mensaje":"ok","IdVerificacion":"V-1"}`)
	default:
		w.WriteHeader(404)
	}
}

// expireAll makes the server forget every token (as a 24 h expiry would).
func (s *fakeSMA) expireAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live = map[string]bool{}
}

func newFakeSMA(t *testing.T) (*fakeSMA, compliance.Source, compliance.Protocol) {
	fs := &fakeSMA{t: t, live: map[string]bool{}}
	srv := httptest.NewServer(fs)
	t.Cleanup(srv.Close)
	src := builtin(t, compliance.SourceSMA)
	src.Endpoint = srv.URL + "/api/v1"
	src.RequestTimeout = 300 * time.Millisecond
	return fs, src, compliance.NewProtocols(srv.Client())[compliance.ProtocolSMA]
}

func smaSend(t *testing.T, src compliance.Source, p compliance.Protocol) compliance.Outcome {
	t.Helper()
	req, err := p.Prepare(context.Background(), src, smaSlot(), time.Now())
	require.NoError(t, err)
	return p.Send(context.Background(), src, smaSlot(), req)
}

func TestSMASendClassification(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		header  map[string]string
		body    string
		kind    compliance.OutcomeKind
		receipt string
		reason  string
		retry   time.Duration
	}{
		{"201 with IdVerificacion", 201, nil, `{"mensaje":"Registros recibidos","IdVerificacion":"8f3a-11"}`, compliance.Confirmed, "8f3a-11", "", 0},
		{"200 with a numeric id", 200, nil, `{"IdVerificacion":12345}`, compliance.Confirmed, "12345", "", 0},
		{"200 in an array", 200, nil, `[{"IdVerificacion":"A1"}]`, compliance.Confirmed, "A1", "", 0},
		{"200 without id needs review", 200, nil, `{"mensaje":"ok"}`, compliance.Confirmed, "", "needs review", 0},
		{"400 rejected", 400, nil, `{"mensaje":"Faltan parámetros"}`, compliance.Rejected, "", "Faltan parámetros", 0},
		{"403 terminal", 403, nil, `{"mensaje":"UF no autorizada"}`, compliance.RejectedTerminal, "", "UF no autorizada", 0},
		{"429", 429, map[string]string{"Retry-After": "30"}, ``, compliance.RateLimited, "", "429", 30 * time.Second},
		{"500", 500, nil, `{"mensaje":"error interno"}`, compliance.Transient, "", "error interno", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, src, p := newFakeSMA(t)
			fs.postFn = func(w http.ResponseWriter, r *http.Request) {
				var body []map[string]any
				assert.NoError(t, json.NewDecoder(r.Body).Decode(&body))
				assert.Len(t, body, 1)
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.body)
			}
			o := smaSend(t, src, p)
			require.Equal(t, c.kind, o.Kind, o.Reason)
			require.Equal(t, c.receipt, o.Receipt)
			require.Contains(t, o.Reason, c.reason)
			require.Equal(t, c.retry, o.RetryAfter)
			require.Equal(t, c.status, o.HTTPStatus)
			require.Equal(t, c.body, string(o.Response))
			require.EqualValues(t, 1, fs.auths.Load())
			require.EqualValues(t, 1, fs.posts.Load())
		})
	}
}

func TestSMATokenCachedAndRenewedOnceOn401(t *testing.T) {
	fs, src, p := newFakeSMA(t)
	for range 3 {
		o := smaSend(t, src, p)
		require.Equal(t, compliance.Confirmed, o.Kind, o.Reason)
		require.Equal(t, "V-1", o.Receipt)
	}
	require.EqualValues(t, 1, fs.auths.Load(), "the token is cached")

	fs.expireAll() // the server no longer accepts the cached token
	o := smaSend(t, src, p)
	require.Equal(t, compliance.Confirmed, o.Kind, o.Reason)
	require.EqualValues(t, 2, fs.auths.Load(), "re-authenticated once")
	require.EqualValues(t, 5, fs.posts.Load(), "3 + the refused one + the retry")

	fs.refuse = true // credentials no longer valid for posting
	o = smaSend(t, src, p)
	require.Equal(t, compliance.RejectedTerminal, o.Kind)
	require.Equal(t, 401, o.HTTPStatus)
	require.EqualValues(t, 3, fs.auths.Load(), "renewed exactly once more")
	require.EqualValues(t, 7, fs.posts.Load(), "posted twice, not more")
}

func TestSMATokenLifetime(t *testing.T) {
	fs, src, p := newFakeSMA(t)
	src.Settings = json.RawMessage(`{"token_ttl":"150ms","token_margin":"0s"}`)
	require.Equal(t, compliance.Confirmed, smaSend(t, src, p).Kind)
	require.Equal(t, compliance.Confirmed, smaSend(t, src, p).Kind)
	require.EqualValues(t, 1, fs.auths.Load())
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, compliance.Confirmed, smaSend(t, src, p).Kind)
	require.EqualValues(t, 2, fs.auths.Load(), "renewed after the configured life")

	// A JWT whose exp has passed is not reused.
	fs2, src2, p2 := newFakeSMA(t)
	past := time.Now().Add(-time.Minute)
	fs2.jwtExp = &past
	require.Equal(t, compliance.Confirmed, smaSend(t, src2, p2).Kind)
	require.Equal(t, compliance.Confirmed, smaSend(t, src2, p2).Kind)
	require.EqualValues(t, 2, fs2.auths.Load(), "an expired JWT is renewed")
}

func TestSMAAuthFailures(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		kind   compliance.OutcomeKind
	}{
		{"bad credentials", 401, `{"mensaje":"credenciales inválidas"}`, compliance.RejectedTerminal},
		{"forbidden", 403, ``, compliance.RejectedTerminal},
		{"auth down", 500, ``, compliance.Transient},
		{"auth rate limited", 429, ``, compliance.RateLimited},
		{"no token in the answer", 200, `{}`, compliance.Transient},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, src, p := newFakeSMA(t)
			fs.authFn = func(w http.ResponseWriter) bool {
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.body)
				return true
			}
			o := smaSend(t, src, p)
			require.Equal(t, c.kind, o.Kind, o.Reason)
			require.EqualValues(t, 0, fs.posts.Load(), "no data sent without a token")
		})
	}
}

func TestSMASlowAnswerIsUnknown(t *testing.T) {
	fs, src, p := newFakeSMA(t)
	fs.delay = time.Second
	o := smaSend(t, src, p)
	require.Equal(t, compliance.Unknown, o.Kind, o.Reason)
}

func TestSMAConcurrentSendsShareOneToken(t *testing.T) {
	fs, src, p := newFakeSMA(t)
	src.RequestTimeout = 5 * time.Second
	var wg sync.WaitGroup
	kinds := make([]compliance.OutcomeKind, 16)
	for i := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := p.Prepare(context.Background(), src, smaSlot(), time.Now())
			if assert.NoError(t, err) {
				kinds[i] = p.Send(context.Background(), src, smaSlot(), req).Kind
			}
		}()
	}
	wg.Wait()
	for _, k := range kinds {
		require.Equal(t, compliance.Confirmed, k)
	}
	require.EqualValues(t, 1, fs.auths.Load())
}

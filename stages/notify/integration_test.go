package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/query"
	"github.com/stackvps/stackvps/stages/notify"
)

// TestEmailIntegration delivers to a real SMTP server started in-process and
// checks the message: subject, plain-text body in the user's language with
// the point's name, the value with its unit and the local time, and the
// deterministic Message-ID recorded as the provider id.
func TestEmailIntegration(t *testing.T) {
	e := newEnv(t)
	ms := newMailServer(t)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	u := e.user("ana@example.cl", accounts.RoleUser)
	e.subscribe("P-1", u, "es", []accounts.Channel{accounts.ChannelEmail}, "", "")
	cfg := testConfig()
	cfg.Email.Host, cfg.Email.Port = ms.hostPort(t)
	n, _ := e.notifier(cfg, notify.Deps{})

	e.process(n, notification("thr-1", u, "P-1"))
	rows := e.waitStatus("email", "sent", "thr-1")

	msgs := ms.messages()
	require.Len(t, msgs, 1)
	require.Equal(t, "alertas@stackvps.example", msgs[0].From)
	require.Equal(t, []string{"ana@example.cl"}, msgs[0].To)
	m, err := mail.ReadMessage(strings.NewReader(msgs[0].Data))
	require.NoError(t, err)
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	require.NoError(t, err)
	require.Equal(t, "[CRÍTICO] Pozo Norte: caudal 12,5 L/s", subject)
	require.Equal(t, rows[[2]string{"thr-1", "email"}].ProviderID, m.Header.Get("Message-Id"))
	require.Regexp(t, `^<[0-9a-f]{32}\.notify@stackvps\.example>$`, m.Header.Get("Message-Id"))
	require.Equal(t, "thr-1", m.Header.Get("X-Stackvps-Notification-Id"))
	require.Equal(t, "text/plain; charset=utf-8", m.Header.Get("Content-Type"))
	raw, err := io.ReadAll(m.Body)
	require.NoError(t, err)
	body := decodeQP(t, raw)
	require.Contains(t, body, "Pozo Norte (P-1)")
	require.Contains(t, body, "Valor: 12,5 L/s")
	require.Contains(t, body, "10-03-2026 10:05", "13:05 UTC in America/Santiago")

	// The Message-ID depends only on the notification: a resend is
	// recognisable.
	em, err := notify.NewEmail(cfg.Email)
	require.NoError(t, err)
	require.Equal(t, m.Header.Get("Message-Id"), "<"+em.MessageID("thr-1")+">")
}

func decodeQP(t *testing.T, b []byte) string {
	t.Helper()
	out, err := io.ReadAll(quotedPrintableReader(b))
	require.NoError(t, err)
	return strings.ReplaceAll(string(out), "\r\n", "\n")
}

// TestSMSIntegration delivers through a provider API served by httptest and
// checks the request: bearer token, idempotency key, JSON body.
func TestSMSIntegration(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var got []map[string]string
	var headers []http.Header
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got, headers = append(got, body), append(headers, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id": "sms-42", "status": "queued"}`)
	}))
	t.Cleanup(provider.Close)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	u := e.user("ana@example.cl", accounts.RoleUser)
	e.subscribe("P-1", u, "en", []accounts.Channel{accounts.ChannelSMS}, "", "+56912345678")
	cfg := testConfig()
	cfg.SMS.Endpoint, cfg.SMS.Token, cfg.SMS.Sender = provider.URL+"/v1/messages", "tok-123", "StackVPS"
	n, _ := e.notifier(cfg, notify.Deps{})

	e.process(n, notification("thr-sms", u, "P-1"))
	rows := e.waitStatus("sms", "sent", "thr-sms")
	require.Equal(t, "sms-42", rows[[2]string{"thr-sms", "sms"}].ProviderID)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 1)
	require.Equal(t, "+56912345678", got[0]["to"])
	require.Equal(t, "StackVPS", got[0]["from"])
	require.Equal(t, "thr-sms", got[0]["reference"])
	require.Equal(t, "Pozo Norte: flow 12.5 L/s (open) 2026-03-10 10:05 -03 (America/Santiago)", got[0]["text"])
	require.Equal(t, "Bearer tok-123", headers[0].Get("Authorization"))
	require.Equal(t, "thr-sms", headers[0].Get("Idempotency-Key"))
	require.Equal(t, "application/json", headers[0].Get("Content-Type"))
}

// TestWebhookIntegration delivers a signed webhook, checks the body and the
// signature, and that the same request replayed after the tolerance is
// refused by VerifySignature.
func TestWebhookIntegration(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var body []byte
	var header http.Header
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		body, header = b, r.Header.Clone()
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	u := e.user("ana@example.cl", accounts.RoleUser)
	e.subscribe("P-1", u, "en", []accounts.Channel{accounts.ChannelWebhook}, recv.URL+"/hook", "")
	n, _ := e.notifier(testConfig(), notify.Deps{})

	e.process(n, notification("thr-hook", u, "P-1"))
	e.waitStatus("webhook", "sent", "thr-hook")

	mu.Lock()
	defer mu.Unlock()
	var p map[string]any
	require.NoError(t, json.Unmarshal(body, &p))
	require.ElementsMatch(t, []string{"id", "type", "severity", "point", "title", "body", "data", "created_at"}, keys(p))
	require.Equal(t, "thr-hook", p["id"])
	require.Equal(t, "threshold", p["type"])
	require.Equal(t, "P-1", p["point"])
	require.Equal(t, "[CRITICAL] Pozo Norte: flow 12.5 L/s", p["title"])
	require.Equal(t, "2026-03-10T13:06:00Z", p["created_at"])
	require.Equal(t, "12.5", p["data"].(map[string]any)["value"])
	require.Equal(t, "thr-hook", header.Get("Idempotency-Key"))
	require.Equal(t, "1", header.Get(notify.HeaderAttempt))

	sig := header.Get(notify.HeaderSignature)
	require.NoError(t, notify.VerifySignature([]byte(testSecret), sig, body, 5*time.Minute, time.Now()))
	require.ErrorIs(t, notify.VerifySignature([]byte(testSecret), sig, body, 5*time.Minute, time.Now().Add(10*time.Minute)),
		notify.ErrStale, "a replay after the tolerance is refused")
	require.ErrorIs(t, notify.VerifySignature([]byte("not-the-secret"), sig, body, 5*time.Minute, time.Now()),
		notify.ErrBadSignature)
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestWebhookStatusesIntegration: 4xx other than 408/429 fails at once;
// 5xx is retried with backoff and fails after notify.max_attempts with the
// reason; 429 is retried.
func TestWebhookStatusesIntegration(t *testing.T) {
	e := newEnv(t)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	statuses := map[string]int{"/gone": http.StatusGone, "/down": http.StatusServiceUnavailable, "/busy": http.StatusTooManyRequests}
	var mu sync.Mutex
	hits := map[string]int{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		if r.URL.Path == "/busy" {
			w.Header().Set("Retry-After", "0")
		}
		http.Error(w, "nope", statuses[r.URL.Path])
	}))
	t.Cleanup(recv.Close)
	ids := map[string]string{}
	users := map[string]int64{}
	for path := range statuses {
		u := e.user(strings.TrimPrefix(path, "/")+"@example.cl", accounts.RoleUser)
		e.subscribe("P-1", u, "es", []accounts.Channel{accounts.ChannelWebhook}, recv.URL+path, "")
		ids[path] = "n" + path
		users[path] = u
	}
	n, reg := e.notifier(testConfig(), notify.Deps{})
	for path := range statuses {
		e.process(n, notification(ids[path], users[path], "P-1"))
	}
	rows := e.waitStatus("webhook", "failed", ids["/gone"], ids["/down"], ids["/busy"])

	gone := rows[[2]string{ids["/gone"], "webhook"}]
	require.Equal(t, 1, gone.Attempts, "a 410 is permanent")
	require.Contains(t, gone.LastError, "HTTP 410")
	down := rows[[2]string{ids["/down"], "webhook"}]
	require.Equal(t, 3, down.Attempts, "retried up to notify.max_attempts")
	require.Contains(t, down.LastError, "gave up after 3 attempts")
	require.Contains(t, down.LastError, "HTTP 503")
	require.Equal(t, 3, rows[[2]string{ids["/busy"], "webhook"}].Attempts, "429 is retried")
	mu.Lock()
	require.Equal(t, map[string]int{"/gone": 1, "/down": 3, "/busy": 3}, hits)
	mu.Unlock()
	require.Equal(t, 4.0, metricValue(t, reg, "stackvps_notify_retries_total", "channel", "webhook"))
	require.Equal(t, 3.0, metricValue(t, reg, "stackvps_notify_deliveries_total", "channel", "webhook", "status", "failed"))
	require.Equal(t, 4.0, metricValue(t, reg, "stackvps_notify_deliveries_total", "channel", "webhook", "status", "retry"))
}

// TestInAppIntegration: in-app messages land once in the inbox, even when
// the record is processed twice; a notification about no point goes to an
// administrator's inbox and email (in-app only without an SMTP server).
func TestInAppIntegration(t *testing.T) {
	e := newEnv(t)
	ms := newMailServer(t)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	u := e.user("ana@example.cl", accounts.RoleUser)
	admin := e.user("root@example.cl", accounts.RoleAdmin)
	e.subscribe("P-1", u, "es", []accounts.Channel{accounts.ChannelInApp}, "", "")
	cfg := testConfig()
	cfg.Email.Host, cfg.Email.Port = ms.hostPort(t)
	n, _ := e.notifier(cfg, notify.Deps{})

	no := notification("thr-inapp", u, "P-1")
	e.process(n, no)
	e.process(n, no) // a replay after a crash before the offset commit
	sys := notification("health-1", admin, "")
	sys.Type, sys.Severity, sys.Title, sys.Body = "system", "warning", "Consumer lag high", "normalize is 5000 records behind."
	sys.Data = map[string]string{}
	e.process(n, sys)
	e.waitStatus("in_app", "sent", "thr-inapp", "health-1")
	e.waitStatus("email", "sent", "health-1")

	var count int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM inbox`).Scan(&count))
	require.Equal(t, 2, count)
	var title, body string
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT title, body FROM inbox WHERE user_id = $1`, u).Scan(&title, &body))
	require.Equal(t, "[CRÍTICO] Pozo Norte: caudal 12,5 L/s", title)
	require.Contains(t, body, "Valor: 12,5 L/s")
	require.Len(t, ms.messages(), 1)
	require.Equal(t, []string{"root@example.cl"}, ms.messages()[0].To)
	require.Len(t, e.deliveries(), 3, "in_app for the user; in_app and email for the administrator")

	// Without an SMTP server configured, a notification about no point goes
	// in-app only, rather than to an email delivery bound to fail.
	noMail := testConfig()
	noMail.Email.Host = ""
	n2, _ := e.notifier(noMail, notify.Deps{})
	sys2 := sys
	sys2.ID = "health-2"
	e.process(n2, sys2)
	e.waitStatus("in_app", "sent", "health-2")
	var channels []string
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT array_agg(channel ORDER BY channel) FROM notification_deliveries
		WHERE notification_id = 'health-2'`).Scan(&channels))
	require.Equal(t, []string{"in_app"}, channels)

	// The user reads the message through the API, and only theirs.
	api := newInboxAPI(t, e)
	tok, _, err := e.acc.CreateToken(e.ctx, e.sys, u, "test", 0)
	require.NoError(t, err)
	var page struct {
		UnreadCount int `json:"unread_count"`
		Results     []struct {
			ID             int64   `json:"id"`
			NotificationID string  `json:"notification_id"`
			Title          string  `json:"title"`
			ReadAt         *string `json:"read_at"`
		} `json:"results"`
	}
	getJSON(t, api.URL+"/api/notifications/", tok, http.MethodGet, &page)
	require.Equal(t, 1, page.UnreadCount)
	require.Len(t, page.Results, 1)
	require.Equal(t, "thr-inapp", page.Results[0].NotificationID)
	require.Equal(t, "[CRÍTICO] Pozo Norte: caudal 12,5 L/s", page.Results[0].Title)
	getJSON(t, fmt.Sprintf("%s/api/notifications/%d/read/", api.URL, page.Results[0].ID), tok, http.MethodPost, nil)
	getJSON(t, api.URL+"/api/notifications/?unread=true", tok, http.MethodGet, &page)
	require.Empty(t, page.Results)
	require.Zero(t, page.UnreadCount)
}

// newInboxAPI serves the query API, with the inbox, on the env's database.
func newInboxAPI(t *testing.T, e *env) *httptest.Server {
	t.Helper()
	api, err := query.New(query.Config{API: config.Default().API, RawTopic: "telemetry.raw"}, query.Deps{
		Pool: e.pool, Accounts: e.acc, Producer: nopProducer{}, Registerer: prometheus.NewRegistry(),
		Log: testLog(t), Inbox: query.NewInboxStore(e.pool)})
	require.NoError(t, err)
	r := chi.NewRouter()
	r.Mount("/api", api.Handler())
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

type nopProducer struct{}

func (nopProducer) Produce(_ context.Context, _ pipeline.Record, ack func(error)) { ack(nil) }

// getJSON sends a request with the token and decodes a 200 answer into out.
func getJSON(t *testing.T, url, token, method string, out any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Token "+token)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, "%s %s: %s", method, url, b)
	if out != nil {
		require.NoError(t, json.Unmarshal(b, out))
	}
}

// TestSkipsIntegration: unknown users, users not subscribed to the type and
// undecodable records queue nothing.
func TestSkipsIntegration(t *testing.T) {
	e := newEnv(t)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	e.point("P-2", "Pozo Sur", "America/Santiago")
	u := e.user("ana@example.cl", accounts.RoleUser)
	e.subscribe("P-1", u, "es", []accounts.Channel{accounts.ChannelInApp}, "", "")
	n, _ := e.notifier(testConfig(), notify.Deps{})
	e.process(n, notification("nobody", 999999, "P-1"))
	e.process(n, notification("other-point", u, "P-2"))
	require.Empty(t, e.deliveries())
	_, err := n.Process(e.ctx, pipelineRecord([]byte("not avro")))
	require.Error(t, err)
	require.False(t, isTransient(err), "a bad record is dead-lettered, not retried")
}

// TestChannelDownDoesNotBlockIntegration: with SMTP hanging (a server that
// accepts connections and never answers) and refusing, webhooks are still
// delivered at once; email is retried, then failed with the reason.
func TestChannelDownDoesNotBlockIntegration(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	var conns []net.Conn
	var cmu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c) // never answered: a hung SMTP server
			cmu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmu.Lock()
		defer cmu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	recv := newHookReceiver(t)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	u := e.user("ana@example.cl", accounts.RoleUser)
	e.subscribe("P-1", u, "es", []accounts.Channel{accounts.ChannelEmail, accounts.ChannelWebhook}, recv.URL, "")
	cfg := testConfig()
	cfg.Concurrency = 1
	cfg.Email.Host = "127.0.0.1"
	_, port, _ := net.SplitHostPort(l.Addr().String())
	cfg.Email.Port = atoi(t, port)
	cfg.Email.Timeout = config.Duration(time.Second)
	n, _ := e.notifier(cfg, notify.Deps{})

	var ids []string
	start := time.Now()
	for i := range 3 {
		id := "down-" + string(rune('a'+i))
		ids = append(ids, id)
		e.process(n, notification(id, u, "P-1"))
	}
	e.waitStatus("webhook", "sent", ids...)
	require.Less(t, time.Since(start), 2*time.Second, "webhooks do not wait for the hung SMTP server")
	for _, id := range ids {
		require.NotEqual(t, "sent", e.deliveries()[[2]string{id, "email"}].Status)
	}
	for _, id := range ids {
		require.Equal(t, 1, recv.counts()[id])
	}
	require.Empty(t, recv.errs)

	// Email, meanwhile, times out on every attempt and fails after
	// notify.max_attempts, with the reason.
	rows := e.waitStatus("email", "failed", ids...)
	for _, id := range ids {
		d := rows[[2]string{id, "email"}]
		require.Equal(t, 3, d.Attempts)
		require.Contains(t, d.LastError, "gave up after 3 attempts")
	}
}

// TestEmailRefusedIntegration: a 5xx answer fails the email at once; a 4xx
// one is retried.
func TestEmailRefusedIntegration(t *testing.T) {
	for _, tt := range []struct {
		code     int
		attempts int
	}{{550, 1}, {421, 3}} {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			e := newEnv(t)
			ms := newMailServer(t)
			ms.setRefuse(tt.code)
			e.point("P-1", "Pozo Norte", "America/Santiago")
			u := e.user("ana@example.cl", accounts.RoleUser)
			e.subscribe("P-1", u, "es", []accounts.Channel{accounts.ChannelEmail}, "", "")
			cfg := testConfig()
			cfg.Email.Host, cfg.Email.Port = ms.hostPort(t)
			n, _ := e.notifier(cfg, notify.Deps{})
			e.process(n, notification("refused", u, "P-1"))
			d := e.waitStatus("email", "failed", "refused")[[2]string{"refused", "email"}]
			require.Equal(t, tt.attempts, d.Attempts)
			require.Contains(t, d.LastError, "refused by the test")
			require.Empty(t, ms.messages())
		})
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(s)
	require.NoError(t, err)
	return v
}

func pipelineRecord(b []byte) pipeline.Record {
	return pipeline.Record{Topic: "notifications", Value: b}
}

func isTransient(err error) bool { return pipeline.IsTransient(err) }

func quotedPrintableReader(b []byte) io.Reader { return quotedprintable.NewReader(bytes.NewReader(b)) }

// metricValue sums the samples of a counter or gauge whose labels include
// the given name/value pairs.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

package notify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/notify"
)

const testSecret = "whsec-test"

func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("NOTIFY_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// env is a migrated schema with an accounts store and a notification codec.
type env struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	db    config.Database
	acc   *accounts.Store
	sys   accounts.Principal
	codec *schemas.Codec[schemas.Notification]
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := testenv.Database(t)
	ctx := testenv.Context(t, 5*time.Minute)
	pool, err := pgxpool.New(ctx, db.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = timescale.Migrate(ctx, pool, testLog(t))
	require.NoError(t, err)
	codec, err := schemas.NewNotificationCodec(ctx, config.SchemaRegistry{}, "notifications")
	require.NoError(t, err)
	return &env{t: t, ctx: ctx, pool: pool, db: db, acc: accounts.New(pool), sys: accounts.System("test"), codec: codec}
}

// user creates a user and returns its id.
func (e *env) user(email string, role accounts.Role) int64 {
	e.t.Helper()
	u, err := e.acc.CreateUser(e.ctx, e.sys, accounts.NewUser{Email: email, Name: email, Role: role})
	require.NoError(e.t, err)
	return u.ID
}

// point creates a point.
func (e *env) point(code, name, zone string) {
	e.t.Helper()
	_, err := e.acc.CreatePoint(e.ctx, e.sys, points.Point{Code: code, Name: name, Timezone: zone, Active: true})
	require.NoError(e.t, err)
}

// subscribe grants the user the point and sets their preferences for it.
func (e *env) subscribe(point string, user int64, lang string, channels []accounts.Channel, webhook, phone string) {
	e.t.Helper()
	_, err := e.acc.Grant(e.ctx, e.sys, point, user, accounts.RelationSecondary, nil)
	require.NoError(e.t, err)
	_, err = e.acc.SetNotifications(e.ctx, e.sys, point, user, accounts.NotificationPrefs{
		Types: accounts.AllNotificationTypes(), Channels: channels, WebhookURL: webhook, Phone: phone,
		Language: lang, Active: true})
	require.NoError(e.t, err)
}

// testConfig is the notify section with fast retries.
func testConfig() config.Notify {
	c := config.Default().Notify
	c.PollInterval = config.Duration(50 * time.Millisecond)
	c.RetryInitial = config.Duration(50 * time.Millisecond)
	c.RetryMax = config.Duration(200 * time.Millisecond)
	c.MaxAttempts = 3
	c.ClaimTimeout = config.Duration(5 * time.Second)
	c.Email.Timeout = config.Duration(2 * time.Second)
	c.SMS.Timeout = config.Duration(2 * time.Second)
	c.Webhook.Timeout = config.Duration(2 * time.Second)
	c.Webhook.SigningSecret = testSecret
	c.Webhook.AllowPrivateNetworks = true // the test servers listen on 127.0.0.1
	c.Email.Security = "none"
	c.Email.From = "Stack VPS <alertas@stackvps.example>"
	return c
}

// notifier builds a notifier on the env's database and runs its dispatcher
// until the test ends.
func (e *env) notifier(cfg config.Notify, deps notify.Deps) (*notify.Notifier, *prometheus.Registry) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	deps.Pool, deps.Decoder, deps.Registerer, deps.Log = e.pool, e.codec, reg, testLog(e.t)
	n, err := notify.New(cfg, deps)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return n, reg
}

// process feeds one notification to the notifier, as the runtime would.
func (e *env) process(n *notify.Notifier, no schemas.Notification) {
	e.t.Helper()
	b, err := e.codec.Encode(&no)
	require.NoError(e.t, err)
	_, err = n.Process(e.ctx, pipeline.Record{Topic: "notifications", Key: []byte(no.UserID), Value: b})
	require.NoError(e.t, err)
}

// notification returns a threshold notification about point for user.
func notification(id string, user int64, point string) schemas.Notification {
	no := schemas.Notification{ID: id, UserID: fmt.Sprint(user), Type: "threshold", Severity: "critical",
		Title: "Flow above the right", Body: "", CreatedAt: time.Date(2026, 3, 10, 13, 6, 0, 0, time.UTC),
		Data: map[string]string{"variable": "flow", "value": "12.5", "unit": "L/s", "at": "2026-03-10T13:05:00Z",
			"state": "opened", "point_name": "ignored: the table's name wins"}}
	if point != "" {
		no.Point = &point
	}
	return no
}

// delivery is one notification_deliveries row.
type delivery struct {
	Status, LastError, ProviderID, Destination, Subject, Body string
	Attempts                                                  int
}

func (e *env) deliveries() map[[2]string]delivery {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `SELECT notification_id, channel, status, coalesce(last_error, ''),
		coalesce(provider_id, ''), destination, subject, body, attempts FROM notification_deliveries`)
	require.NoError(e.t, err)
	defer rows.Close()
	out := map[[2]string]delivery{}
	for rows.Next() {
		var id, ch string
		var d delivery
		require.NoError(e.t, rows.Scan(&id, &ch, &d.Status, &d.LastError, &d.ProviderID, &d.Destination, &d.Subject, &d.Body, &d.Attempts))
		out[[2]string{id, ch}] = d
	}
	require.NoError(e.t, rows.Err())
	return out
}

// waitStatus waits until every row of the notification ids on channel ch
// has status.
func (e *env) waitStatus(ch, status string, ids ...string) map[[2]string]delivery {
	e.t.Helper()
	var got map[[2]string]delivery
	require.Eventually(e.t, func() bool {
		got = e.deliveries()
		for _, id := range ids {
			if got[[2]string{id, ch}].Status != status {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "waiting for %s deliveries %v to be %s", ch, ids, status)
	return got
}

// mailServer is an in-process SMTP server (go-smtp) that keeps what it
// receives; refuse makes it answer MAIL FROM with the given code.
type mailServer struct {
	addr string
	mu   sync.Mutex
	msgs []mailMsg
	// refuse, when not zero, is the SMTP code MAIL FROM is answered with.
	refuse int
}

type mailMsg struct {
	From string
	To   []string
	Data string
}

func newMailServer(t *testing.T) *mailServer {
	t.Helper()
	ms := &mailServer{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{srv: ms}, nil }))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ms.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ms
}

func (ms *mailServer) setRefuse(code int) {
	ms.mu.Lock()
	ms.refuse = code
	ms.mu.Unlock()
}

func (ms *mailServer) messages() []mailMsg {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return append([]mailMsg(nil), ms.msgs...)
}

func (ms *mailServer) hostPort(t *testing.T) (string, int) {
	host, port, err := net.SplitHostPort(ms.addr)
	require.NoError(t, err)
	var p int
	_, err = fmt.Sscan(port, &p)
	require.NoError(t, err)
	return host, p
}

type mailSession struct {
	srv  *mailServer
	from string
	to   []string
}

func (s *mailSession) Reset()        { s.from, s.to = "", nil }
func (s *mailSession) Logout() error { return nil }
func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	s.srv.mu.Lock()
	code := s.srv.refuse
	s.srv.mu.Unlock()
	if code != 0 {
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: "refused by the test"}
	}
	s.from = from
	return nil
}
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.srv.mu.Lock()
	s.srv.msgs = append(s.srv.msgs, mailMsg{From: s.from, To: s.to, Data: string(b)})
	s.srv.mu.Unlock()
	return nil
}

// hookReceiver is a webhook receiver that verifies every request's
// signature and records the idempotency keys it accepted.
type hookReceiver struct {
	*httptest.Server
	mu sync.Mutex
	// byKey counts accepted requests per Idempotency-Key.
	byKey map[string]int
	// bodies are the accepted bodies by key.
	bodies map[string][]byte
	// status, when not zero, is answered instead of 200.
	status int
	// stall, when not nil, makes handlers wait for it to close.
	stall    chan struct{}
	inflight int
	errs     []error
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	h := &hookReceiver{byKey: map[string]int{}, bodies: map[string][]byte{}}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	stall, status := h.stall, h.status
	h.inflight++
	h.mu.Unlock()
	defer func() { h.mu.Lock(); h.inflight--; h.mu.Unlock() }()
	if err := notify.VerifySignature([]byte(testSecret), r.Header.Get(notify.HeaderSignature), body, 5*time.Minute, time.Now()); err != nil {
		h.fail(err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if stall != nil {
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	key := r.Header.Get(notify.HeaderIdempotencyKey)
	if key == "" {
		h.fail(errors.New("request without Idempotency-Key"))
	}
	h.mu.Lock()
	h.byKey[key]++
	h.bodies[key] = body
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) fail(err error) {
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
}

func (h *hookReceiver) counts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.byKey {
		out[k] = v
	}
	return out
}

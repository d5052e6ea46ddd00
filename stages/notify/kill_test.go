package notify_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/notify"
)

// childName is the child process that runs the notify stage (childMain)
// instead of the tests: the kill test starts it as a real process and kills
// it with SIGKILL.
const childName = "notify"

// childConfig is what the parent passes its child (secrets are not in it:
// the child uses testSecret).
type childConfig struct {
	Brokers  []string
	Topic    string
	DLQ      string
	Group    string
	Database string
	SMTPHost string
	SMTPPort int
}

func TestMain(m *testing.M) {
	testenv.RunChild(childName, childMain)
	goleak.VerifyTestMain(m)
}

// childNotifyConfig is the notify section of the child: a webhook timeout
// long enough for the parent to kill it mid-request, a short claim timeout
// so that the restarted child resends soon.
func childNotifyConfig(cc childConfig) config.Notify {
	cfg := testConfig()
	cfg.MaxAttempts = 8
	cfg.Concurrency = 4
	cfg.Webhook.Timeout = config.Duration(4 * time.Second)
	cfg.ClaimTimeout = config.Duration(5 * time.Second)
	cfg.Email.Host, cfg.Email.Port = cc.SMTPHost, cc.SMTPPort
	return cfg
}

// childMain runs the notify stage as `stackvps run --stages notify` does,
// until SIGTERM or SIGKILL.
func childMain(cc childConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	pool, err := pgxpool.New(ctx, cc.Database)
	if err != nil {
		return err
	}
	defer pool.Close()
	codec, err := schemas.NewNotificationCodec(ctx, config.SchemaRegistry{}, cc.Topic)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	n, err := notify.New(childNotifyConfig(cc), notify.Deps{Pool: pool, Decoder: codec, Registerer: reg, Log: log})
	if err != nil {
		return err
	}
	met, err := pipeline.NewMetrics(reg)
	if err != nil {
		return err
	}
	k := config.Default().Kafka
	k.Brokers, k.Topics.Notifications, k.ClientID = cc.Brokers, cc.Topic, cc.Group
	pl := config.Default().Pipeline
	pl.GroupPrefix = cc.Group
	pl.SessionTimeout = config.Duration(6 * time.Second)
	st, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "notify", Inputs: []string{cc.Topic}, DLQ: cc.DLQ, Processor: n, FlushInterval: 100 * time.Millisecond,
	}, pipeline.Deps{Kafka: k, Pipeline: pl, Metrics: met, Health: pipeline.NewHealth(time.Second), Log: log})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return st.Run(gctx) })
	g.Go(func() error { return n.Run(gctx) })
	return g.Wait()
}

// stallingReceiver processes each webhook (records its Idempotency-Key) as
// soon as it arrives, then, while stalling, holds the answer back: the
// sender cannot know the receiver has it. That is the ambiguous case a
// kill mid-send creates.
type stallingReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	byKey    map[string]int
	stalled  int
	stalling bool
	release  chan struct{}
	badSigs  int
}

func newStallingReceiver(t *testing.T) *stallingReceiver {
	s := &stallingReceiver{byKey: map[string]int{}, stalling: true, release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body [64 << 10]byte
		nb, _ := r.Body.Read(body[:])
		s.mu.Lock()
		if notify.VerifySignature([]byte(testSecret), r.Header.Get(notify.HeaderSignature), readAll(r, body[:nb]), 5*time.Minute, time.Now()) != nil {
			s.badSigs++
		}
		s.byKey[r.Header.Get(notify.HeaderIdempotencyKey)]++
		stall, release := s.stalling, s.release
		if stall {
			s.stalled++
		}
		s.mu.Unlock()
		if stall {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.Close)
	return s
}

func readAll(r *http.Request, first []byte) []byte {
	out := append([]byte(nil), first...)
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out
		}
	}
}

func (s *stallingReceiver) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalling {
		s.stalling = false
		close(s.release)
	}
}

// TestKillMidSendIntegration runs notify as a child process consuming a real
// Kafka topic, kills it with SIGKILL while webhook requests are in flight
// (the receiver has processed them but not answered), restarts it, and
// checks that every notification reached every channel, that in-app and
// email were delivered once each, and that the only webhooks received twice
// are the ones in flight at the kill, resent with the same Idempotency-Key,
// so a receiver deduplicating by key processes each notification once.
func TestKillMidSendIntegration(t *testing.T) {
	e := newEnv(t)
	k := testenv.Kafka(t, 2)
	ms := newMailServer(t)
	recv := newStallingReceiver(t)
	e.point("P-1", "Pozo Norte", "America/Santiago")
	const users, perUser = 4, 5
	var uids []int64
	for i := range users {
		u := e.user(fmt.Sprintf("user%d@example.cl", i), accounts.RoleUser)
		e.subscribe("P-1", u, "es", []accounts.Channel{accounts.ChannelEmail, accounts.ChannelWebhook, accounts.ChannelInApp},
			recv.URL+"/hook", "")
		uids = append(uids, u)
	}
	var ids []string
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.DefaultProduceTopic(k.Topics.Notifications))
	require.NoError(t, err)
	defer cl.Close()
	for _, u := range uids {
		for j := range perUser {
			no := notification(fmt.Sprintf("kill-%d-%d", u, j), u, "P-1")
			ids = append(ids, no.ID)
			b, err := e.codec.Encode(&no)
			require.NoError(t, err)
			require.NoError(t, cl.ProduceSync(e.ctx, &kgo.Record{Key: []byte(no.UserID), Value: b}).FirstErr())
		}
	}

	host, port := ms.hostPort(t)
	cc := childConfig{Brokers: k.Brokers, Topic: k.Topics.Notifications, DLQ: k.Topics.ReadingsDLQ,
		Group: strings.ReplaceAll(k.ClientID, "_", "-"), Database: e.db.URL.Reveal(), SMTPHost: host, SMTPPort: port}
	child := testenv.StartChild(t, childName, cc)

	// Wait until the child's four webhook workers are each stuck in a
	// request the receiver has already processed, then kill it.
	require.Eventually(t, func() bool {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		return recv.stalled >= 4
	}, 60*time.Second, 10*time.Millisecond, "webhook requests in flight")
	testenv.Kill9(t, child) // no drain, no "sent", no commit

	// What was in flight at the kill is left "sending": its outcome is
	// unknown to notify.
	ambiguous := map[string][]string{}
	for key, d := range e.deliveries() {
		if d.Status == "sending" {
			ambiguous[key[1]] = append(ambiguous[key[1]], key[0])
		}
	}
	require.Len(t, ambiguous["webhook"], 4, "the four webhook requests in flight are left \"sending\"")
	t.Logf("in flight at the kill: %v", ambiguous)
	recv.stop()

	testenv.StartChild(t, childName, cc)
	for _, ch := range []string{"webhook", "email", "in_app"} {
		e.waitStatusLong(ch, "sent", ids...)
	}

	recv.mu.Lock()
	defer recv.mu.Unlock()
	require.Zero(t, recv.badSigs)
	require.Len(t, recv.byKey, len(ids), "deduplicated by Idempotency-Key, each notification once")
	for _, id := range ids {
		want := 1
		if contains(ambiguous["webhook"], id) {
			want = 2 // processed before the kill, resent with the same key
		}
		require.Equal(t, want, recv.byKey[id], "webhook %s", id)
	}
	rows := e.deliveries()
	for ch, list := range ambiguous {
		for _, id := range list {
			if ch == "webhook" {
				// Held by the receiver until after the kill: certainly
				// unfinished, so sent again.
				require.Equal(t, 2, rows[[2]string{id, ch}].Attempts, "%s %s", ch, id)
			} else {
				// A write already on its way to PostgreSQL when the
				// process died may still commit after the look above.
				require.LessOrEqual(t, rows[[2]string{id, ch}].Attempts, 2, "%s %s", ch, id)
			}
		}
	}

	// In-app: exactly once.
	var inbox, distinct int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*), count(DISTINCT notification_id) FROM inbox`).Scan(&inbox, &distinct))
	require.Equal(t, len(ids), inbox)
	require.Equal(t, len(ids), distinct)

	// Email: a message in flight at the kill may have reached the server
	// and is sent again with the same Message-ID; any other arrives once.
	// Deduplicated by Message-ID, one message per notification.
	byMsgID, idOf := map[string]int{}, map[string]string{}
	for _, m := range ms.messages() {
		var msgID, nid string
		for _, line := range strings.Split(m.Data, "\r\n") {
			if v, ok := strings.CutPrefix(line, "Message-ID: "); ok {
				msgID = v
			}
			if v, ok := strings.CutPrefix(line, "X-StackVPS-Notification-Id: "); ok {
				nid = v
			}
		}
		byMsgID[msgID]++
		idOf[msgID] = nid
	}
	require.Len(t, byMsgID, len(ids), "deduplicated by Message-ID, each notification once")
	for msgID, n := range byMsgID {
		if contains(ambiguous["email"], idOf[msgID]) {
			require.LessOrEqual(t, n, 2, "email %s", idOf[msgID])
		} else {
			require.Equal(t, 1, n, "email %s", idOf[msgID])
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// waitStatusLong is waitStatus with room for a consumer-group rebalance and
// a claim timeout.
func (e *env) waitStatusLong(ch, status string, ids ...string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		got := e.deliveries()
		for _, id := range ids {
			if got[[2]string{id, ch}].Status != status {
				return false
			}
		}
		return true
	}, 90*time.Second, 100*time.Millisecond, "waiting for every %s delivery to be %s", ch, status)
}

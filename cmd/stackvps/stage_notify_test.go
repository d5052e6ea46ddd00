package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/notify"
)

// TestRunNotifyIntegration runs `stackvps run --stages notify,api`
// configured from the environment: a notification produced to Kafka
// reaches the user's webhook, signed, and their inbox, which the API lists;
// the stage creates its dead-letter topic and exports its metrics.
func TestRunNotifyIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	kafka := testenv.Kafka(t, 1)
	ctx := t.Context()
	pool := migratedPool(t, db)

	const secret = "run-notify-secret"
	var mu sync.Mutex
	var hooks []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.VerifySignature([]byte(secret), r.Header.Get(notify.HeaderSignature), body, time.Minute, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mu.Lock()
		hooks = append(hooks, r.Header.Get(notify.HeaderIdempotencyKey))
		mu.Unlock()
	}))
	defer recv.Close()

	acc, sys := accounts.New(pool), accounts.System("test")
	u, err := acc.CreateUser(ctx, sys, accounts.NewUser{Email: "ana@example.cl", Name: "Ana"})
	require.NoError(t, err)
	_, err = acc.CreatePoint(ctx, sys, points.Point{Code: "P-1", Name: "Pozo Norte", Active: true})
	require.NoError(t, err)
	_, err = acc.Grant(ctx, sys, "P-1", u.ID, accounts.RelationSecondary, nil)
	require.NoError(t, err)
	_, err = acc.SetNotifications(ctx, sys, "P-1", u.ID, accounts.NotificationPrefs{
		Types: accounts.AllNotificationTypes(), Channels: []accounts.Channel{accounts.ChannelWebhook, accounts.ChannelInApp},
		WebhookURL: recv.URL + "/hook", Language: "en", Active: true})
	require.NoError(t, err)
	token, _, err := acc.CreateToken(ctx, sys, u.ID, "test", 0)
	require.NoError(t, err)

	codec, err := schemas.NewNotificationCodec(ctx, config.SchemaRegistry{}, kafka.Topics.Notifications)
	require.NoError(t, err)
	point := "P-1"
	no := schemas.Notification{ID: "run-notify-1", UserID: strconv.FormatInt(u.ID, 10), Point: &point, Type: "data_gap",
		Severity: "warning", Title: "No data", CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
		Data: map[string]string{"variable": "flow", "at": time.Now().UTC().Format(time.RFC3339)}}
	b, err := codec.Encode(&no)
	require.NoError(t, err)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: kafka.Topics.Notifications, Key: []byte(no.UserID), Value: b}).FirstErr())

	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	base := "http://" + listen
	p := startProc(t, concat(dbEnv(db), kafkaEnv(kafka), []string{
		"STACKVPS_HTTP_LISTEN=" + listen,
		"STACKVPS_NOTIFY_WEBHOOK_SIGNING_SECRET=" + secret,
		"STACKVPS_NOTIFY_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true",
		"STACKVPS_PIPELINE_SHUTDOWN_TIMEOUT=10s",
	}), "run", "--stages", "notify,api")

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hooks) == 1
	}, 60*time.Second, 100*time.Millisecond, "the webhook arrives")
	mu.Lock()
	require.Equal(t, []string{"run-notify-1"}, hooks)
	mu.Unlock()

	var page struct {
		Results []struct {
			NotificationID string `json:"notification_id"`
			Title          string `json:"title"`
		} `json:"results"`
	}
	require.Eventually(t, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/notifications/", nil)
		req.Header.Set("Authorization", "Token "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		return res.StatusCode == http.StatusOK && json.NewDecoder(res.Body).Decode(&page) == nil && len(page.Results) == 1
	}, 30*time.Second, 100*time.Millisecond, "the inbox lists the message")
	require.Equal(t, "run-notify-1", page.Results[0].NotificationID)
	require.Equal(t, "[WARNING] Pozo Norte: no data for flow", page.Results[0].Title)

	_, metrics, err := httpGet(ctx, base+"/metrics")
	require.NoError(t, err)
	require.Contains(t, metrics, `stackvps_notify_deliveries_total{channel="webhook",status="sent"} 1`)
	require.Contains(t, metrics, `stackvps_notify_notifications_total{outcome="queued"} 1`)

	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.wait(t, 20*time.Second), "exit status after SIGTERM")
	require.NotContains(t, p.stderr.String(), `"level":"ERROR"`)
	require.NotContains(t, p.stderr.String(), secret, "the signing secret is never logged")
}

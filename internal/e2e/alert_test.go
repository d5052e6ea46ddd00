package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/simulate"
	"github.com/stackvps/stackvps/stages/notify"
)

// webhookCall is one request the test's webhook receiver accepted.
type webhookCall struct {
	key     string
	attempt string
	body    struct {
		ID       string            `json:"id"`
		Type     string            `json:"type"`
		Severity string            `json:"severity"`
		Point    string            `json:"point"`
		Title    string            `json:"title"`
		Body     string            `json:"body"`
		Data     map[string]string `json:"data"`
	}
}

// A flow above a point's threshold, published over MQTT, reaches the point's
// owner as a signed webhook and an in-app message, through bridge,
// normalize, alert and notify; when the flow falls back the alert resolves
// and the owner hears that too. Nothing is delivered twice.
func TestAlertToWebhookEndToEndIntegration(t *testing.T) {
	const secret = "e2e-webhook-secret"
	var mu sync.Mutex
	var calls []webhookCall
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := notify.VerifySignature([]byte(secret), r.Header.Get(notify.HeaderSignature), raw, 5*time.Minute, time.Now()); err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		c := webhookCall{key: r.Header.Get(notify.HeaderIdempotencyKey), attempt: r.Header.Get(notify.HeaderAttempt)}
		if err := json.Unmarshal(raw, &c.body); err != nil {
			t.Errorf("webhook body: %v: %s", err, raw)
		}
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	d := newDeployment(t, simulate.Config{Devices: 1, Formats: []string{"generic-json"}, Rate: 0, Count: 1},
		"STACKVPS_NOTIFY_WEBHOOK_SIGNING_SECRET="+secret,
		"STACKVPS_NOTIFY_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true",
		"STACKVPS_NOTIFY_POLL_INTERVAL=200ms",
		"STACKVPS_ALERT_EVALUATE_INTERVAL=1s",
	)
	ctx := testenv.Context(t, 3*time.Minute)
	device := d.fleet.Devices()[0]
	point := simulate.PointOf(device)

	// Ana owns the point and wants threshold alerts by webhook and in-app.
	var user int64
	require.NoError(t, d.pool.QueryRow(ctx, `INSERT INTO users (email, name) VALUES ('ana@example.cl', 'Ana') RETURNING id`).Scan(&user))
	_, err := d.pool.Exec(ctx, `UPDATE catchment_points SET name = 'Pozo Norte' WHERE code = $1`, point)
	require.NoError(t, err)
	_, err = d.pool.Exec(ctx, `INSERT INTO point_owners (point, user_id, relation) VALUES ($1, $2, 'PRIMARY')`, point, user)
	require.NoError(t, err)
	_, err = d.pool.Exec(ctx, `INSERT INTO point_notifications (point, user_id, notification_types, channels, webhook_url, language)
		VALUES ($1, $2, '{threshold}', '{webhook,in_app}', $3, 'en')`, point, user, receiver.URL+"/hook")
	require.NoError(t, err)
	_, err = d.pool.Exec(ctx, `INSERT INTO alert_rules (point, variable, kind, params, severity)
		VALUES ($1, 'flow', 'threshold_above', '{"limit": 10}', 'critical')`, point)
	require.NoError(t, err)

	d.run("bridge,normalize,alert,notify")

	// One reading a minute: flow 5, 5, 20, 22, 21 (opens once), 4, 4 (resolves).
	cm := d.publisher(ctx)
	defer func() { _ = cm.Disconnect(ctx) }()
	start := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Minute)
	for i, flow := range []float64{5, 5, 20, 22, 21, 4, 4} {
		r := simulate.Reading{Device: device, Time: start.Add(time.Duration(i) * time.Minute), Flow: flow, Totalizer: 1000 + float64(i), Level: 8}
		payload, err := simulate.GenericJSON{}.Encode(r)
		require.NoError(t, err)
		_, err = cm.Publish(ctx, &paho.Publish{Topic: d.prefix + "/generic-json/" + device, QoS: 1, Payload: payload})
		require.NoError(t, err)
	}

	received := func() []webhookCall {
		mu.Lock()
		defer mu.Unlock()
		return append([]webhookCall(nil), calls...)
	}
	// Every delivery is final once the two notifications are sent on both
	// channels; a webhook sent twice would show as a second request here
	// and as a delivery with more than one attempt.
	sent := func() (n, attempts int) {
		require.NoError(t, d.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(attempts), 0)::int FROM notification_deliveries
			WHERE user_id = $1 AND status = 'sent'`, user).Scan(&n, &attempts))
		return n, attempts
	}
	require.Eventually(t, func() bool { n, _ := sent(); return n == 4 }, 90*time.Second, 200*time.Millisecond,
		"webhooks received: %+v", received())
	n, attempts := sent()
	require.Equal(t, 4, attempts, "each of the %d deliveries sent at its first attempt", n)
	got := received()
	require.Len(t, got, 2, "one webhook for the opening, one for the resolution: %+v", got)
	for _, c := range got {
		require.Equal(t, c.body.ID, c.key, "the idempotency key is the notification id")
		require.Equal(t, "1", c.attempt)
		require.Equal(t, "threshold", c.body.Type)
		require.Equal(t, point, c.body.Point)
		require.Equal(t, "critical", c.body.Severity)
	}
	require.Equal(t, "opened", got[0].body.Data["state"], "%+v", got[0].body)
	require.Equal(t, "20", got[0].body.Data["value"], "the first reading above the limit opened it")
	require.Equal(t, "resolved", got[1].body.Data["state"], "%+v", got[1].body)
	require.Contains(t, got[0].body.Title, "Pozo Norte")
	t.Logf("webhook 1: %s | %s", got[0].body.Title, got[0].body.Body)
	t.Logf("webhook 2: %s | %s", got[1].body.Title, got[1].body.Body)

	// The same two are in Ana's in-app inbox, and the alert is resolved.
	var inbox int
	require.NoError(t, d.pool.QueryRow(ctx, `SELECT count(*) FROM inbox WHERE user_id = $1`, user).Scan(&inbox))
	require.Equal(t, 2, inbox)
	var state string
	var notified int
	require.NoError(t, d.pool.QueryRow(ctx, `SELECT state, notify_count FROM alerts WHERE point = $1`, point).Scan(&state, &notified))
	require.Equal(t, "resolved", state)
	require.Equal(t, 1, notified, "opened once, never re-notified")
	var deliveries int
	require.NoError(t, d.pool.QueryRow(ctx, `SELECT count(*) FROM notification_deliveries WHERE user_id = $1`, user).Scan(&deliveries))
	require.Equal(t, 4, deliveries, "two notifications on two channels, nothing else queued")
}

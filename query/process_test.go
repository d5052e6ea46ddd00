package query_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/query"
)

// TestProcessKafkaIntegration ingests payloads through the real producer and
// reads them back from the raw topic: key, unchanged bytes and the bridge's
// headers. Refused requests produce nothing.
func TestProcessKafkaIntegration(t *testing.T) {
	t.Parallel()
	kafka := testenv.Kafka(t, 1)
	met, err := pipeline.NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	prod, err := pipeline.NewProducer("api", pipeline.Deps{Kafka: kafka, Pipeline: config.Default().Pipeline, Metrics: met,
		Health: pipeline.NewHealth(time.Second), Log: quietLog()})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	f := newFixture(t, withProducer(prod), withConfig(func(c *query.Config) { c.RawTopic = kafka.Topics.Raw }))

	payload := []byte("{\"flow\": 12.5}\x00\xff binary tail")
	accepted := []struct {
		rq       req
		role     string
		device   string
		provider string
	}{
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: payload}, rolePrimary, deviceOwn, "generic-json"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/", body: payload,
			header: map[string]string{"X-Device": deviceOwn, "X-Provider": "acme-registers"}}, roleAdministrator, deviceOwn, "acme-registers"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceFor + "&provider=lorawan-ttn", body: payload}, roleAdmin, deviceFor, "lorawan-ttn"},
	}
	var receivedAt []string
	for _, a := range accepted {
		res := f.as(a.role, a.rq)
		require.Equal(t, http.StatusAccepted, res.status, "%s", res)
		body := res.json(t)
		require.Equal(t, a.device, body["device"])
		require.Equal(t, a.provider, body["provider"])
		require.EqualValues(t, len(payload), body["bytes"])
		receivedAt = append(receivedAt, body["received_at"].(string))
	}
	refused := []struct {
		rq     req
		role   string
		status int
		param  string
	}{
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=D-NOPE", body: payload}, rolePrimary, 404, "device"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: payload}, roleSecondary, 403, "device"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: payload}, roleStranger, 404, "device"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn + "&provider=nope", body: payload}, rolePrimary, 400, "provider"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte{}}, rolePrimary, 400, "body"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/", body: payload}, rolePrimary, 400, "device"},
		{req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: payload,
			header: map[string]string{"X-Device": deviceFor}}, rolePrimary, 400, "device"},
	}
	for _, r := range refused {
		res := f.as(r.role, r.rq)
		require.Equal(t, r.status, res.status, "%s %s as %s: %s", r.rq.method, r.rq.path, r.role, res)
		require.Equal(t, r.param, res.json(t)["param"])
	}

	recs := consumeAll(t, kafka.Brokers, kafka.Topics.Raw, len(accepted))
	require.Len(t, recs, len(accepted), "exactly the accepted payloads are in the topic")
	for i, a := range accepted {
		r := recs[i]
		require.Equal(t, a.device, string(r.Key))
		require.Equal(t, payload, r.Value, "the payload unchanged")
		hs := map[string]string{}
		for _, h := range r.Headers {
			hs[h.Key] = string(h.Value)
		}
		require.Equal(t, map[string]string{
			"mqtt-topic":  "http:/api/telemetry/process/" + a.provider + "/" + a.device,
			"received-at": receivedAt[i],
			"provider":    a.provider,
		}, hs)
		at, err := time.Parse(time.RFC3339Nano, hs["received-at"])
		require.NoError(t, err)
		require.Equal(t, at.UnixMilli(), r.Timestamp.UnixMilli(), "the record time is received-at")
	}
}

// consumeAll reads the topic from the start until want records came and
// then a little longer, to catch extra ones.
func consumeAll(t *testing.T, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		wait := 2 * time.Second
		if len(out) < want {
			wait = time.Until(deadline)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
		if len(out) >= want && fs.Empty() {
			break
		}
	}
	return out
}

// TestProcessAckIntegration shows that 202 waits for Kafka's
// acknowledgement, and that a failed or refused produce is not a 202.
func TestProcessAckIntegration(t *testing.T) {
	t.Parallel()
	prod := &fakeProducer{hold: make(chan struct{}), started: make(chan struct{}, 1)}
	f := newFixture(t, withProducer(prod), withConfig(func(c *query.Config) { c.MaxPayload = 1024 }))

	done := make(chan response, 1)
	go func() {
		done <- f.as(rolePrimary, req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("x")})
	}()
	<-prod.started
	select {
	case res := <-done:
		t.Fatalf("answered %d before Kafka acknowledged: %s", res.status, res)
	case <-time.After(300 * time.Millisecond):
	}
	close(prod.hold)
	res := <-done
	require.Equal(t, http.StatusAccepted, res.status, "%s", res)
	require.Len(t, prod.produced(), 1)

	prod.mu.Lock()
	prod.hold, prod.started, prod.err = nil, nil, errors.New("broker down")
	prod.mu.Unlock()
	res = f.as(rolePrimary, req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("x")})
	require.Equal(t, http.StatusServiceUnavailable, res.status, "%s", res)
	require.Equal(t, "5", res.header.Get("Retry-After"))

	prod.mu.Lock()
	prod.err = fmt.Errorf("%w: broker says so", pipeline.ErrRecordTooLarge)
	prod.mu.Unlock()
	res = f.as(rolePrimary, req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("x")})
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, "%s", res)

	n := len(prod.produced())
	res = f.as(rolePrimary, req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: make([]byte, 1025)})
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, "%s", res)
	require.Equal(t, "body", res.json(t)["param"])
	require.Len(t, prod.produced(), n, "an oversized payload is not produced")

	// Once Run is told to stop, ingests are refused with 503 and the
	// drain ends.
	ctx, cancel := context.WithCancel(f.ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- f.api.Run(ctx) }()
	cancel()
	require.NoError(t, <-stopped)
	res = f.as(rolePrimary, req{method: http.MethodPost, path: "/api/telemetry/process/?device=" + deviceOwn, body: []byte("x")})
	require.Equal(t, http.StatusServiceUnavailable, res.status, "%s", res)
	require.Len(t, prod.produced(), n)
}

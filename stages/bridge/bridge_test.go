package bridge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/mqttclient"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/stages/bridge"
)

// Timeouts are generous: the machine has two cores and other packages' tests
// use the same broker and Kafka at the same time.
const (
	waitLong = 60 * time.Second
	tick     = 50 * time.Millisecond
)

// TestBridgeHappyPathIntegration publishes QoS 1 messages for several devices
// and checks that each one lands in telemetry.raw exactly once, byte for byte,
// keyed by device, with the contract headers and in publish order per device.
func TestBridgeHappyPathIntegration(t *testing.T) {
	env := newTestEnv(t, 3)
	prod := newProducer(t, env.kafka)
	br := startBridge(t, env.cfg, prod)
	br.awaitSubscribed(t)

	results, ok := br.health.Run(context.Background())
	require.True(t, ok, "readiness once subscribed: %+v", results)
	require.Equal(t, "mqtt:bridge", results[0].Name)
	require.Equal(t, 1.0, br.metric("stackvps_bridge_connected"))

	const n = 300
	devices := []struct{ provider, device string }{
		{"kunak", "k-1"}, {"kunak", "k-2"}, {"kunak", "k-3"},
		{"lora", "l-1"}, {"lora", "l-2"}, {"lora", "l-3"},
	}
	pub := newPublisher(t, env.cfg.MQTT)
	start := time.Now()
	type sent struct {
		topic, provider, device string
		seq                     uint32
	}
	want := map[string]sent{} // by payload
	for i := range n {
		d := devices[i%len(devices)]
		topic := env.prefix + "/" + d.provider + "/" + d.device
		p := payload(d.device, i)
		want[string(p)] = sent{topic: topic, provider: d.provider, device: d.device, seq: uint32(i)}
		publish(t, pub, topic, p)
	}

	recs := consume(t, env.kafka.Brokers, env.cfg.Topic, n)
	end := time.Now()
	require.Len(t, recs, n)
	require.EqualValues(t, n, endOffsetSum(t, env.kafka.Brokers, env.cfg.Topic), "no duplicates in telemetry.raw")
	require.Zero(t, endOffsetSum(t, env.kafka.Brokers, env.cfg.DLQ), "nothing dead-lettered")

	seen := map[string]bool{}
	partitionOf := map[string]int32{}
	lastOffset := map[string]int64{}
	lastSeq := map[string]int64{}
	for _, r := range recs {
		w, ok := want[string(r.Value)]
		require.True(t, ok, "unexpected value %q", r.Value)
		require.False(t, seen[string(r.Value)], "duplicate value %q", r.Value)
		seen[string(r.Value)] = true

		require.Equal(t, w.device, string(r.Key), "key is the device id")
		hs := headers(r)
		require.ElementsMatch(t, []string{bridge.HeaderMQTTTopic, bridge.HeaderReceivedAt, bridge.HeaderProvider}, keys(hs),
			"exactly the contract headers, each once")
		require.Equal(t, w.topic, hs[bridge.HeaderMQTTTopic])
		require.Equal(t, w.provider, hs[bridge.HeaderProvider])
		at, err := time.Parse(time.RFC3339Nano, hs[bridge.HeaderReceivedAt])
		require.NoError(t, err, "received-at is RFC 3339")
		require.True(t, strings.HasSuffix(hs[bridge.HeaderReceivedAt], "Z"), "received-at is UTC: %s", hs[bridge.HeaderReceivedAt])
		require.False(t, at.Before(start.Truncate(time.Millisecond)), "received-at %s before the test published (%s)", at, start)
		require.False(t, at.After(end), "received-at %s after the test consumed (%s)", at, end)
		require.True(t, r.Timestamp.Equal(at.Truncate(time.Millisecond)),
			"record timestamp %s is received-at %s", r.Timestamp, at)

		// Per device: one partition, offsets and sequence numbers increasing.
		if p, ok := partitionOf[w.device]; ok {
			require.Equal(t, p, r.Partition, "device %s stays on one partition", w.device)
			require.Greater(t, r.Offset, lastOffset[w.device])
			require.Greater(t, int64(w.seq), lastSeq[w.device], "device %s keeps publish order", w.device)
		}
		partitionOf[w.device] = r.Partition
		lastOffset[w.device] = r.Offset
		lastSeq[w.device] = int64(w.seq)
	}
	require.Len(t, seen, n)

	require.Eventually(t, func() bool { return br.metric("stackvps_bridge_messages_acked_total") == n },
		waitLong, tick, "acked_total reaches %d", n)
	require.Equal(t, float64(n), br.metric("stackvps_bridge_messages_received_total"))
	require.Equal(t, 0.0, br.metric("stackvps_bridge_inflight_messages"))
	require.Equal(t, 0.0, br.metric("stackvps_bridge_produce_errors_total"))
	require.Equal(t, float64(env.cfg.Bridge.ReceiveMaximum), br.metric("stackvps_bridge_receive_maximum"))
	require.Equal(t, 1.0, br.metric("stackvps_bridge_connections_total"))
	require.Empty(t, br.logs.atLeast(slog.LevelError), "no errors logged")

	require.NoError(t, br.stop(), "Run returns nil after a clean shutdown")
	results, ok = br.health.Run(context.Background())
	require.False(t, ok, "not ready once stopped")
	require.Contains(t, results[0].Error, "not connected")
	require.Equal(t, 0.0, br.metric("stackvps_bridge_connected"))
}

// TestBridgeTopicMismatchIntegration subscribes a filter wider than the
// pattern: topics the pattern rejects go to the raw DLQ with the reason, are
// acknowledged to the broker, and are not redelivered to the next session.
func TestBridgeTopicMismatchIntegration(t *testing.T) {
	env := newTestEnv(t, 1)
	env.cfg.Bridge.Subscriptions = []string{env.prefix + "/#"}
	prod := newProducer(t, env.kafka)
	br := startBridge(t, env.cfg, prod)
	br.awaitSubscribed(t)

	pub := newPublisher(t, env.cfg.MQTT)
	bad := map[string][]byte{
		env.prefix + "/only-one-level": []byte("one level"),
		env.prefix + "/p/d/extra":      {0x00, 0x01, 0xff},
		env.prefix + "/p/":             []byte("empty device"),
	}
	for topic, p := range bad {
		publish(t, pub, topic, p)
	}
	goodTopic := env.prefix + "/p/dev-1"
	publish(t, pub, goodTopic, []byte("good"))

	dead := consume(t, env.kafka.Brokers, env.cfg.DLQ, len(bad))
	for _, r := range dead {
		hs := headers(r)
		topic := hs[bridge.HeaderMQTTTopic]
		p, ok := bad[topic]
		require.True(t, ok, "dead letter for unexpected topic %q", topic)
		require.Equal(t, p, r.Value, "payload kept byte for byte")
		require.Equal(t, topic, string(r.Key), "a dead letter is keyed by its MQTT topic")
		require.Equal(t, "topic_mismatch", hs[pipeline.HeaderErrorReason])
		require.Equal(t, "bridge", hs[pipeline.HeaderErrorStage])
		require.Contains(t, hs[pipeline.HeaderError], env.cfg.Bridge.TopicPattern, "error names the pattern")
		require.Contains(t, hs[pipeline.HeaderError], topic, "error names the topic")
		_, err := time.Parse(time.RFC3339Nano, hs[bridge.HeaderReceivedAt])
		require.NoError(t, err)
		delete(bad, topic)
	}
	require.Empty(t, bad, "every mismatching topic dead-lettered once")

	good := consume(t, env.kafka.Brokers, env.cfg.Topic, 1)
	require.Equal(t, "dev-1", string(good[0].Key))
	require.Equal(t, "good", string(good[0].Value))

	require.Eventually(t, func() bool { return br.metric("stackvps_bridge_messages_acked_total") == 4 },
		waitLong, tick, "dead letters are acknowledged like good messages")
	require.Equal(t, 3.0, br.metric("stackvps_bridge_messages_dead_lettered_total", "reason", "topic_mismatch"))
	require.NoError(t, br.stop())

	// Had the dead letters not been PUBACKed, the broker would resend them
	// to the resumed session before anything published later.
	br2 := startBridge(t, env.cfg, prod)
	br2.awaitConnected(t)
	publish(t, pub, env.prefix+"/p/marker", []byte("marker"))
	marker := consume(t, env.kafka.Brokers, env.cfg.Topic, 2)
	require.Equal(t, "marker", string(marker[1].Value))
	require.Equal(t, 1.0, br2.metric("stackvps_bridge_messages_received_total"), "only the marker reaches the second session")
	require.EqualValues(t, 3, endOffsetSum(t, env.kafka.Brokers, env.cfg.DLQ), "no dead letter redelivered")
}

// TestBridgeBackpressureIntegration withholds Kafka's acknowledgements: the
// broker must stop at the Receive Maximum, no PUBACK may leave early, and the
// connection (keepalives) must stay up; once Kafka acknowledges, everything
// flows exactly once.
func TestBridgeBackpressureIntegration(t *testing.T) {
	env := newTestEnv(t, 1)
	const receiveMax, n = 5, 50
	env.cfg.Bridge.ReceiveMaximum = receiveMax
	env.cfg.MQTT.KeepAlive = config.Duration(2 * time.Second)
	prod := &holdingProducer{hold: true}
	br := startBridge(t, env.cfg, prod)
	br.awaitSubscribed(t)

	// The broker acknowledges the publisher on its own, whatever the
	// subscriber does, so publishing one after the other does not wait on the
	// bridge.
	pub := newPublisher(t, env.cfg.MQTT)
	topic := env.prefix + "/p/dev-1"
	var published [][]byte
	for i := range n {
		p := payload("dev-1", i)
		published = append(published, p)
		publish(t, pub, topic, p)
	}

	require.Eventually(t, func() bool { return prod.count() == receiveMax }, waitLong, tick,
		"the broker delivers up to the Receive Maximum")
	require.Equal(t, float64(receiveMax), br.metric("stackvps_bridge_inflight_messages"))
	require.Equal(t, float64(receiveMax), br.metric("stackvps_bridge_receive_maximum"))

	// Hold for three and a half keepalive intervals: nothing more arrives, the
	// connection stays up and is not re-established.
	holdUntil := time.Now().Add(7 * time.Second)
	for time.Now().Before(holdUntil) {
		require.Equal(t, receiveMax, prod.count(), "no message beyond the Receive Maximum while Kafka withholds acks")
		require.Equal(t, 1.0, br.metric("stackvps_bridge_connected"), "connection stays up")
		require.Equal(t, 1.0, br.metric("stackvps_bridge_connections_total"), "no reconnection")
		require.Equal(t, 0.0, br.metric("stackvps_bridge_messages_acked_total"), "no PUBACK before Kafka acknowledges")
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, float64(receiveMax), br.metric("stackvps_bridge_inflight_messages"))
	require.Equal(t, float64(receiveMax), br.metric("stackvps_bridge_messages_received_total"))

	prod.release()
	require.Eventually(t, func() bool { return br.metric("stackvps_bridge_messages_acked_total") == n },
		waitLong, tick, "all messages acknowledged once Kafka acknowledges")
	require.Equal(t, published, prod.values(), "every message delivered exactly once, in publish order")
	require.Equal(t, float64(n), br.metric("stackvps_bridge_messages_received_total"))
	require.Equal(t, 0.0, br.metric("stackvps_bridge_inflight_messages"))
	require.Equal(t, 1.0, br.metric("stackvps_bridge_connections_total"))
	require.NoError(t, br.stop())
}

// TestBridgeSessionResumeIntegration stops the bridge, publishes while it is
// away, and starts a new bridge with the same client id: the broker kept the
// session (and its subscription) and delivers what it queued.
func TestBridgeSessionResumeIntegration(t *testing.T) {
	env := newTestEnv(t, 2)
	env.cfg.MQTT.SessionExpiry = config.Duration(3 * time.Minute)
	prod := newProducer(t, env.kafka)
	br := startBridge(t, env.cfg, prod)
	br.awaitSubscribed(t)
	first := br.logs.first("mqtt connected")
	require.NotNil(t, first)
	require.Equal(t, false, first.attrs["session_present"], "the first connection starts a session")
	require.NoError(t, br.stop(), "Run returns nil when its context is cancelled")
	require.Equal(t, 0.0, br.metric("stackvps_bridge_connected"))

	const n = 100
	pub := newPublisher(t, env.cfg.MQTT)
	want := map[string]bool{}
	for i := range n {
		dev := fmt.Sprintf("dev-%d", i%4)
		p := payload(dev, i)
		want[string(p)] = true
		// Reason code 0 (not "no matching subscribers") already shows the
		// subscription outlived the connection.
		publish(t, pub, env.prefix+"/p/"+dev, p)
	}

	br2 := startBridge(t, env.cfg, prod)
	recs := consume(t, env.kafka.Brokers, env.cfg.Topic, n)
	for _, r := range recs {
		require.True(t, want[string(r.Value)], "unexpected or duplicate value %q", r.Value)
		delete(want, string(r.Value))
	}
	require.Empty(t, want, "every message queued while the bridge was away arrives")
	require.Eventually(t, func() bool { return br2.metric("stackvps_bridge_messages_acked_total") == n },
		waitLong, tick)
	require.EqualValues(t, n, endOffsetSum(t, env.kafka.Brokers, env.cfg.Topic), "no duplicates")

	connected := br2.logs.first("mqtt connected")
	require.NotNil(t, connected)
	require.Equal(t, true, connected.attrs["session_present"], "the second bridge resumes the session")
	started := br2.logs.first("bridge started")
	require.NotNil(t, started)
	require.Equal(t, env.cfg.MQTT.ClientID, started.attrs["client_id"])
	require.Equal(t, 1.0, br2.metric("stackvps_bridge_connections_total"))
	require.NoError(t, br2.stop())
}

// TestBridgeDrainIntegration cancels Run while records wait for Kafka: Run
// returns nil only after every record handed to Kafka is acknowledged, and a
// new bridge on the same session completes the rest, so nothing is lost.
func TestBridgeDrainIntegration(t *testing.T) {
	env := newTestEnv(t, 1)
	kafkaProd := newProducer(t, env.kafka)
	slow := &slowProducer{next: kafkaProd, delay: 200 * time.Millisecond}
	br := startBridge(t, env.cfg, slow)
	br.awaitSubscribed(t)

	// Publish at about one message per 10ms, so that messages arrive before,
	// during and after the drain.
	const n = 20
	pub := newPublisher(t, env.cfg.MQTT)
	var published [][]byte
	for i := range n {
		published = append(published, payload("dev-1", i))
	}
	pubErr := make(chan error, 1)
	go func() {
		for _, p := range published {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := pub.Publish(ctx, &paho.Publish{Topic: env.prefix + "/p/dev-1", QoS: 1, Payload: p})
			cancel()
			if err != nil {
				pubErr <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		pubErr <- nil
	}()
	require.Eventually(t, func() bool { return slow.produced() >= 5 }, waitLong, time.Millisecond)

	// Cancel with records in flight; remember what Kafka had been handed.
	br.cancel()
	beforeCancel, ackedBeforeCancel := slow.snapshot()
	require.Less(t, ackedBeforeCancel, len(beforeCancel), "some records are in flight at cancellation")
	require.NoError(t, br.wait(), "Run drains and returns nil")
	handed, acked := slow.snapshot()
	require.Equal(t, len(handed), acked, "every record handed to Kafka was acknowledged before Run returned")
	require.Equal(t, 0.0, br.metric("stackvps_bridge_inflight_messages"))
	require.Equal(t, float64(acked), br.metric("stackvps_bridge_messages_acked_total"))
	for _, v := range beforeCancel {
		require.Contains(t, handed, v)
	}
	ackedFirst := map[string]bool{}
	for _, v := range handed {
		ackedFirst[string(v)] = true
	}

	require.NoError(t, <-pubErr, "publishing")

	// The same client id resumes the session: what the first bridge left
	// unacknowledged, or never received, is delivered now.
	br2 := startBridge(t, env.cfg, kafkaProd)
	br2.awaitConnected(t)
	recs := consume(t, env.kafka.Brokers, env.cfg.Topic, n)
	require.Eventually(t, func() bool {
		return br2.metric("stackvps_bridge_messages_acked_total") == float64(n-len(handed))
	}, waitLong, tick, "the second bridge handles exactly what the first left (%d handed to Kafka)", len(handed))
	total := endOffsetSum(t, env.kafka.Brokers, env.cfg.Topic)
	if total > int64(len(recs)) {
		recs = consume(t, env.kafka.Brokers, env.cfg.Topic, int(total))
	}
	count := map[string]int{}
	for _, r := range recs {
		count[string(r.Value)]++
	}
	for _, p := range published {
		require.GreaterOrEqual(t, count[string(p)], 1, "message %x lost", p)
		if ackedFirst[string(p)] {
			require.Equal(t, 1, count[string(p)], "message %x acknowledged at shutdown was redelivered", p)
		}
	}
	t.Logf("%d of %d messages handed to Kafka by the first bridge (%d at cancellation), %d records in Kafka",
		len(handed), n, len(beforeCancel), total)
	require.NoError(t, br2.stop())
}

// TestBridgeSharedSubscriptionIntegration runs two bridges (two client ids)
// in one share group: the broker splits the messages between them, and each
// message reaches Kafka once.
func TestBridgeSharedSubscriptionIntegration(t *testing.T) {
	env := newTestEnv(t, 2)
	other := env.cfg
	other.MQTT.ClientID = testenv.Name(t)
	t.Cleanup(func() { endSession(t, other.MQTT) })
	prod := newProducer(t, env.kafka)
	br1 := startBridge(t, env.cfg, prod)
	br2 := startBridge(t, other, prod)
	br1.awaitSubscribed(t)
	br2.awaitSubscribed(t)

	const n = 100
	pub := newPublisher(t, env.cfg.MQTT)
	want := map[string]bool{}
	for i := range n {
		dev := fmt.Sprintf("dev-%d", i%5)
		p := payload(dev, i)
		want[string(p)] = true
		publish(t, pub, env.prefix+"/p/"+dev, p)
	}
	recs := consume(t, env.kafka.Brokers, env.cfg.Topic, n)
	for _, r := range recs {
		require.True(t, want[string(r.Value)], "unexpected or duplicate value %q", r.Value)
		delete(want, string(r.Value))
	}
	require.Empty(t, want)
	require.Eventually(t, func() bool {
		return br1.metric("stackvps_bridge_messages_acked_total")+br2.metric("stackvps_bridge_messages_acked_total") == n
	}, waitLong, tick)
	r1, r2 := br1.metric("stackvps_bridge_messages_received_total"), br2.metric("stackvps_bridge_messages_received_total")
	require.Equal(t, float64(n), r1+r2, "each message delivered to one bridge of the group")
	require.Positive(t, r1, "the first bridge takes a share")
	require.Positive(t, r2, "the second bridge takes a share")
	require.EqualValues(t, n, endOffsetSum(t, env.kafka.Brokers, env.cfg.Topic), "no duplicates")
	require.NoError(t, br1.stop())
	require.NoError(t, br2.stop())
}

// TestNewRejects checks the constructor's validation.
func TestNewRejects(t *testing.T) {
	valid := func() (bridge.Config, bridge.Deps) {
		cfg := bridge.Config{MQTT: config.Default().MQTT, Bridge: config.Default().Bridge,
			Topic: "telemetry.raw", DLQ: "telemetry.raw.dlq"}
		deps := bridge.Deps{Producer: &holdingProducer{}, Registerer: prometheus.NewRegistry(),
			Health: pipeline.NewHealth(time.Second), Log: slog.New(slog.DiscardHandler)}
		return cfg, deps
	}
	cases := []struct {
		name        string
		mutate      func(*bridge.Config, *bridge.Deps)
		errContains string
	}{
		{name: "no producer", mutate: func(_ *bridge.Config, d *bridge.Deps) { d.Producer = nil }, errContains: "producer"},
		{name: "no registerer", mutate: func(_ *bridge.Config, d *bridge.Deps) { d.Registerer = nil }, errContains: "registerer"},
		{name: "no health", mutate: func(_ *bridge.Config, d *bridge.Deps) { d.Health = nil }, errContains: "health"},
		{name: "no log", mutate: func(_ *bridge.Config, d *bridge.Deps) { d.Log = nil }, errContains: "log"},
		{name: "no topic", mutate: func(c *bridge.Config, _ *bridge.Deps) { c.Topic = "" }, errContains: "topic"},
		{name: "no DLQ", mutate: func(c *bridge.Config, _ *bridge.Deps) { c.DLQ = "" }, errContains: "dead-letter"},
		{name: "pattern without device", mutate: func(c *bridge.Config, _ *bridge.Deps) { c.Bridge.TopicPattern = "telemetry/{provider}/+" },
			errContains: "bridge.topic_pattern"},
		{name: "hash not last", mutate: func(c *bridge.Config, _ *bridge.Deps) { c.Bridge.TopicPattern = "telemetry/#/{device}" },
			errContains: "bridge.topic_pattern"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, deps := valid()
			tc.mutate(&cfg, &deps)
			_, err := bridge.New(cfg, deps)
			require.ErrorContains(t, err, tc.errContains)
		})
	}
	t.Run("valid", func(t *testing.T) {
		cfg, deps := valid()
		_, err := bridge.New(cfg, deps)
		require.NoError(t, err)
		_, err = bridge.New(cfg, deps)
		require.ErrorContains(t, err, "registering metrics", "a second bridge on the same registry is an error")
	})
}

// testEnv is one integration test's configuration: Kafka topics, an MQTT
// topic prefix, client id and share group of its own.
type testEnv struct {
	kafka  config.Kafka
	cfg    bridge.Config
	prefix string
}

// newTestEnv creates the test's topics and ends its MQTT session at cleanup,
// after every bridge the test started has stopped.
func newTestEnv(t *testing.T, partitions int) *testEnv {
	t.Helper()
	k := testenv.Kafka(t, partitions)
	m := testenv.MQTT(t)
	prefix := testenv.Name(t)
	b := config.Default().Bridge
	b.Subscriptions = []string{prefix + "/+/+"}
	b.TopicPattern = prefix + "/{provider}/{device}"
	b.ShareGroup = prefix
	t.Cleanup(func() { endSession(t, m) })
	return &testEnv{
		kafka:  k,
		prefix: prefix,
		cfg: bridge.Config{MQTT: m, Bridge: b, Topic: k.Topics.Raw, DLQ: k.Topics.RawDLQ,
			DrainTimeout: 30 * time.Second},
	}
}

// endSession connects once with clean start and no session expiry, so the
// broker drops the persistent session and stops queuing for it.
func endSession(t *testing.T, m config.MQTT) {
	t.Helper()
	cc, err := mqttclient.ClientConfig(m, mqttclient.Options{CleanStart: true, SessionExpiry: -1})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cm, err := autopaho.NewConnection(ctx, cc)
	require.NoError(t, err)
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Errorf("ending mqtt session %s: %v", m.ClientID, err)
		return
	}
	if err := cm.Disconnect(ctx); err != nil {
		t.Errorf("ending mqtt session %s: %v", m.ClientID, err)
	}
}

// newProducer returns a real producer on the test's Kafka, flushed and closed
// at cleanup.
func newProducer(t *testing.T, k config.Kafka) *pipeline.Producer {
	t.Helper()
	met, err := pipeline.NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	p, err := pipeline.NewProducer("bridge", pipeline.Deps{Kafka: k, Metrics: met,
		Health: pipeline.NewHealth(5 * time.Second), Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Flush(ctx); err != nil {
			t.Errorf("flushing producer: %v", err)
		}
		p.Close()
	})
	return p
}

// runningBridge is a bridge whose Run goroutine the test owns.
type runningBridge struct {
	reg    *prometheus.Registry
	health *pipeline.Health
	logs   *logRecorder
	cancel context.CancelFunc
	done   chan error

	once sync.Once
	err  error
}

// startBridge runs a bridge with its own registry, health and log; cleanup
// stops it if the test did not.
func startBridge(t *testing.T, cfg bridge.Config, p bridge.Producer) *runningBridge {
	t.Helper()
	rb := &runningBridge{
		reg:    prometheus.NewRegistry(),
		health: pipeline.NewHealth(5 * time.Second),
		logs:   &logRecorder{},
		done:   make(chan error, 1),
	}
	b, err := bridge.New(cfg, bridge.Deps{Producer: p, Registerer: rb.reg, Health: rb.health,
		Log: slog.New(recordingHandler{r: rb.logs})})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	rb.cancel = cancel
	go func() { rb.done <- b.Run(ctx) }()
	t.Cleanup(func() {
		if err := rb.stop(); err != nil {
			t.Errorf("stopping bridge: %v", err)
		}
		if t.Failed() {
			for _, e := range rb.logs.all() {
				t.Logf("bridge log: %s %s %v", e.level, e.msg, e.attrs)
			}
		}
	})
	return rb
}

// stop cancels Run and returns its error.
func (rb *runningBridge) stop() error {
	rb.cancel()
	return rb.wait()
}

// wait returns Run's error once it returned.
func (rb *runningBridge) wait() error {
	rb.once.Do(func() {
		select {
		case rb.err = <-rb.done:
		case <-time.After(2 * time.Minute):
			rb.err = errors.New("Run did not return within 2m of cancellation")
		}
	})
	return rb.err
}

// awaitConnected waits for the CONNACK.
func (rb *runningBridge) awaitConnected(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, ok := rb.health.Run(context.Background())
		return ok
	}, waitLong, tick, "bridge connects to the broker")
}

// awaitSubscribed waits for the readiness check and then for the SUBACK
// (logged as "subscribed"), after which the broker routes to the bridge.
func (rb *runningBridge) awaitSubscribed(t *testing.T) {
	t.Helper()
	rb.awaitConnected(t)
	require.Eventually(t, func() bool { return rb.logs.first("subscribed") != nil }, waitLong, tick,
		"bridge subscribes")
}

// metric returns the value of the bridge's series name (with the given label
// pairs), or -1 when it does not exist.
func (rb *runningBridge) metric(name string, labels ...string) float64 {
	mfs, err := rb.reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// newPublisher connects a separate client (clean start, no session) to
// publish test messages; it disconnects at cleanup.
func newPublisher(t *testing.T, m config.MQTT) *autopaho.ConnectionManager {
	t.Helper()
	m.ClientID = testenv.Name(t) + "_pub"
	cc, err := mqttclient.ClientConfig(m, mqttclient.Options{CleanStart: true, SessionExpiry: -1})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(ctx, cc)
	require.NoError(t, err)
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		cancel()
	})
	actx, acancel := context.WithTimeout(ctx, waitLong)
	defer acancel()
	require.NoError(t, cm.AwaitConnection(actx), "publisher connects")
	return cm
}

// publish sends one QoS 1 message and requires reason code 0 in the PUBACK:
// the broker accepted it and a subscription matched (Mosquitto answers 0x10,
// "no matching subscribers", otherwise).
func publish(t *testing.T, cm *autopaho.ConnectionManager, topic string, p []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: p})
	require.NoError(t, err, "publishing to %s", topic)
	require.Zero(t, resp.ReasonCode, "PUBACK reason for %s", topic)
}

// payload is a binary payload: a big-endian sequence number, bytes that are
// not UTF-8, and the device id.
func payload(device string, seq int) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(seq))
	b = append(b, 0x00, 0xff, 0xfe, '\n')
	return append(b, device...)
}

// consume reads topic from the start until it holds n records; it fails the
// test if they do not arrive in time.
func consume(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLong)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		f := cl.PollFetches(ctx)
		f.EachError(func(tp string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("fetching %s/%d: %v", tp, p, err)
			}
		})
		out = append(out, f.Records()...)
	}
	require.Equal(t, n, len(out), "records in %s", topic)
	return out
}

// endOffsetSum returns the sum of topic's end offsets: the records ever
// written to it.
func endOffsetSum(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	require.NoError(t, offs.Error())
	var sum int64
	offs.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum
}

// headers returns a record's headers by key; a repeated key fails the check
// on keys' length.
func headers(r *kgo.Record) map[string]string {
	m := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	if len(m) != len(r.Headers) {
		m["<duplicate header>"] = ""
	}
	return m
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// holdingProducer is a bridge.Producer that records every record and, while
// hold is set, withholds the acknowledgements until release.
type holdingProducer struct {
	mu      sync.Mutex
	hold    bool
	recs    []pipeline.Record
	pending []func(error)
}

func (p *holdingProducer) Produce(_ context.Context, r pipeline.Record, ack func(error)) {
	p.mu.Lock()
	r.Value = bytes.Clone(r.Value)
	p.recs = append(p.recs, r)
	if p.hold {
		p.pending = append(p.pending, ack)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	ack(nil)
}

func (p *holdingProducer) Flush(context.Context) error { return nil }

// release acknowledges the withheld records and stops holding.
func (p *holdingProducer) release() {
	p.mu.Lock()
	p.hold = false
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, ack := range pending {
		ack(nil)
	}
}

func (p *holdingProducer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.recs)
}

func (p *holdingProducer) values() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.recs))
	for i, r := range p.recs {
		out[i] = r.Value
	}
	return out
}

// slowProducer writes through next but delays each acknowledgement, like a
// slow Kafka; it records which values it was handed and which it acked.
type slowProducer struct {
	next  bridge.Producer
	delay time.Duration

	mu     sync.Mutex
	handed [][]byte
	acked  int
}

func (p *slowProducer) Produce(ctx context.Context, r pipeline.Record, ack func(error)) {
	p.mu.Lock()
	p.handed = append(p.handed, bytes.Clone(r.Value))
	p.mu.Unlock()
	p.next.Produce(ctx, r, func(err error) {
		time.AfterFunc(p.delay, func() {
			p.mu.Lock()
			p.acked++
			p.mu.Unlock()
			ack(err)
		})
	})
}

func (p *slowProducer) Flush(ctx context.Context) error { return p.next.Flush(ctx) }

func (p *slowProducer) produced() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.handed)
}

// snapshot returns the values handed so far and how many were acknowledged.
func (p *slowProducer) snapshot() ([][]byte, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.handed), p.acked
}

// logRecorder keeps the bridge's log records for assertions.
type logRecorder struct {
	mu   sync.Mutex
	recs []logEntry
}

type logEntry struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

func (r *logRecorder) all() []logEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// first returns the first record with message msg, or nil.
func (r *logRecorder) first(msg string) *logEntry {
	for _, e := range r.all() {
		if e.msg == msg {
			return &e
		}
	}
	return nil
}

func (r *logRecorder) atLeast(l slog.Level) []logEntry {
	var out []logEntry
	for _, e := range r.all() {
		if e.level >= l {
			out = append(out, e)
		}
	}
	return out
}

// recordingHandler is a slog.Handler writing to a logRecorder.
type recordingHandler struct {
	r     *logRecorder
	attrs []slog.Attr
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordingHandler) Handle(_ context.Context, rec slog.Record) error {
	e := logEntry{level: rec.Level, msg: rec.Message, attrs: map[string]any{}}
	for _, a := range h.attrs {
		e.attrs[a.Key] = a.Value.Resolve().Any()
	}
	rec.Attrs(func(a slog.Attr) bool {
		e.attrs[a.Key] = a.Value.Resolve().Any()
		return true
	})
	h.r.mu.Lock()
	h.r.recs = append(h.r.recs, e)
	h.r.mu.Unlock()
	return nil
}

func (h recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingHandler{r: h.r, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h recordingHandler) WithGroup(string) slog.Handler { return h }

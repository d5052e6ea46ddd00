package bridge_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A message Kafka refuses for its size must not stall the PUBACKs queued
// behind it (they go out in order): a truncated copy goes to the DLQ and the
// messages after it flow on.
func TestBridgeRefusedRecordDoesNotStallIntegration(t *testing.T) {
	env := newTestEnv(t, 1)
	env.cfg.Bridge.ReceiveMaximum = 5
	prod := newProducer(t, env.kafka)
	br := startBridge(t, env.cfg, prod)
	br.awaitSubscribed(t)
	pub := newPublisher(t, env.cfg.MQTT)
	publish(t, pub, env.prefix+"/p/big", bytes.Repeat([]byte("x"), 2<<20)) // > Kafka's max.message.bytes
	const n = 10
	for i := range n {
		publish(t, pub, env.prefix+"/p/dev-1", payload("dev-1", i))
	}
	if !assert.Eventually(t, func() bool {
		return endOffsetSum(t, env.kafka.Brokers, env.cfg.Topic) == n && endOffsetSum(t, env.kafka.Brokers, env.cfg.DLQ) == 1
	}, 30*time.Second, 200*time.Millisecond, "the messages after the refused one reach telemetry.raw") {
		t.Fatalf("raw=%d dlq=%d received=%v acked_total=%v inflight=%v produce_errors=%v",
			endOffsetSum(t, env.kafka.Brokers, env.cfg.Topic), endOffsetSum(t, env.kafka.Brokers, env.cfg.DLQ),
			br.metric("stackvps_bridge_messages_received_total"), br.metric("stackvps_bridge_messages_acked_total"),
			br.metric("stackvps_bridge_inflight_messages"), br.metric("stackvps_bridge_produce_errors_total"))
	}
	dead := consume(t, env.kafka.Brokers, env.cfg.DLQ, 1)
	h := headers(dead[0])
	require.Equal(t, "record_too_large", h["error-reason"])
	require.Equal(t, "2097152", h["original-size"])
	require.Equal(t, "true", h["truncated"])
	require.Len(t, dead[0].Value, 64<<10)
	require.Eventually(t, func() bool { return br.metric("stackvps_bridge_messages_acked_total") == n+1 }, 10*time.Second, 100*time.Millisecond)
	require.Equal(t, 0.0, br.metric("stackvps_bridge_inflight_messages"))
}

// Filters added to bridge.subscriptions take effect on restart even though
// the broker kept the session.
func TestBridgeSubscriptionChangeAppliesOnRestartIntegration(t *testing.T) {
	env := newTestEnv(t, 1)
	prod := newProducer(t, env.kafka)
	old := env.cfg
	old.Bridge.Subscriptions = []string{env.prefix + "/old/+"}
	br := startBridge(t, old, prod)
	br.awaitSubscribed(t)
	require.NoError(t, br.stop())
	br2 := startBridge(t, env.cfg, prod) // subscriptions now <prefix>/+/+
	br2.awaitConnected(t)
	require.Eventually(t, func() bool { return br2.logs.first("subscribed") != nil }, 30*time.Second, 50*time.Millisecond,
		"the new filters are subscribed")
	pub := newPublisher(t, env.cfg.MQTT)
	publish(t, pub, env.prefix+"/new/dev-1", []byte("x")) // PUBACK reason 0: someone subscribes
	require.Eventually(t, func() bool { return endOffsetSum(t, env.kafka.Brokers, env.cfg.Topic) == 1 }, 20*time.Second, 100*time.Millisecond)
}

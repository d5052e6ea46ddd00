package benchmarks_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/stackvps/stackvps/benchmarks/internal/rig"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/simulate"
	"github.com/stackvps/stackvps/stages/bridge"
)

// Sizes of the bridge benchmark: bridgeMessages messages from bridgeDevices
// devices (a third in each format). Mosquitto queues at most
// max_queued_messages (100,000 in deploy/local) per session, so a round must
// stay below that even if the bridge falls behind.
const (
	bridgeMessages = 50_000
	bridgeDevices  = 300
)

// BenchmarkBridge measures the MQTT bridge against the raw limit of MQTT
// delivery. Each round publishes the same fixed stream of 50,000 messages
// (simulated payloads of 300 devices in the three formats, 160-480 bytes)
// at QoS 1 from one connection with 1,000 publishes in flight, under a topic
// prefix of its own, to a fresh shared-subscription group, and is timed from
// the first publish until the last message arrived.
//
//   - path=raw_subscriber: a bare paho.golang (autopaho) QoS 1 subscriber
//     with the bridge's Receive Maximum (1,000) counting messages, acking each
//     as its handler returns: the broker's delivery rate to one subscriber.
//     The raw limit.
//   - path=bridge: bridge.New + Run with a real pipeline.NewProducer on a
//     12-partition telemetry.raw: each message is produced (acks=all,
//     idempotent) and PUBACKed after Kafka's ack. Timed until the topic's end
//     offsets show every message (polled every 10ms).
//
// Both report messages/s and cpu-us/message (CPU of the benchmark process,
// which hosts the publisher in both paths; Mosquitto's and Kafka's are not
// in it); path=bridge reports ratio_to_raw, each bridge round paired with a
// raw round run just before it.
//
//	go test -run '^$' -bench '^BenchmarkBridge$' -benchtime 1x -benchmem -count 6 -timeout 60m ./benchmarks/ | tee benchmarks/results/bridge.txt
func BenchmarkBridge(b *testing.B) {
	ctx := context.Background()
	k := testenv.Kafka(b, benchPartitions)
	mq := testenv.MQTT(b)
	stream, err := rig.NewStream("telemetry", bridgeDevices, bridgeMessages, time.Now().Add(-2*time.Hour).Truncate(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	adm, err := rig.Admin(k)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(adm.Close)
	const n = bridgeMessages
	receiveMax := uint16(config.Default().Bridge.ReceiveMaximum)

	rawRound := func(b *testing.B) time.Duration {
		name := strings.ReplaceAll(testenv.Name(b), "_", "-")
		var d time.Duration
		var err error
		labelled("raw_subscriber", func() {
			d, err = rig.MQTTDelivery(ctx, mq, name, "$share/"+name+"/"+name+"/+/+", receiveMax, stream.WithPrefix(name))
		})
		if err != nil {
			b.Fatal(err)
		}
		return d
	}

	b.Run("path=raw_subscriber", func(b *testing.B) { rawPath(b, n, "messages/s", rawRound) })

	b.Run("path=bridge", func(b *testing.B) {
		var p paired
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			var raw time.Duration
			if *pairRounds {
				raw = rawRound(b)
			}
			b.StartTimer()
			var cpu time.Duration
			p.add(n, bridgeRound(b, k, mq, adm, stream, &cpu), raw)
			p.addCPU(cpu)
		}
		p.report(b, "messages/s")
	})
}

// bridgeRound runs one bridge round and returns its measured time. The
// bridge's start (connection, subscription, a probe message) and its drain
// are not timed.
func bridgeRound(b *testing.B, k config.Kafka, mq config.MQTT, adm *kadm.Client, stream *rig.Stream, cpu *time.Duration) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	ctx := context.Background()
	name := strings.ReplaceAll(testenv.Name(b), "_", "-")
	mq.ClientID = name
	defer rig.DropSession(mq, name)
	reg := prometheus.NewRegistry()
	met, err := pipeline.NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	health := pipeline.NewHealth(3 * time.Second)
	deps := pipeline.Deps{Kafka: k, Pipeline: config.Default().Pipeline, Metrics: met, Health: health, Log: rig.Discard}
	var (
		br   *bridge.Bridge
		prod *pipeline.Producer
	)
	bctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	labelled("bridge", func() {
		prod, err = pipeline.NewProducer("bridge", deps)
		if err != nil {
			b.Fatal(err)
		}
		br, err = bridge.New(bridge.Config{
			MQTT: mq,
			Bridge: config.Bridge{Subscriptions: []string{name + "/+/+"}, ShareGroup: name,
				TopicPattern: name + "/{provider}/{device}", ReceiveMaximum: config.Default().Bridge.ReceiveMaximum},
			Topic: k.Topics.Raw, DLQ: k.Topics.RawDLQ,
		}, bridge.Deps{Producer: prod, Registerer: reg, Health: health, Log: rig.Discard})
		if err != nil {
			b.Fatal(err)
		}
		go func() { done <- br.Run(bctx) }()
	})
	defer prod.Close()
	pub, err := rig.NewPublisher(ctx, mq, name+"-pub")
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	awaitBridge(b, pub, reg, name)
	base := endOffsets(b, adm, k.Topics.Raw)
	msgs := stream.WithPrefix(name)
	wctx, cancelWait := context.WithTimeout(ctx, 5*time.Minute)
	defer cancelWait()

	cpu0 := cpuTime()
	b.StartTimer()
	var start, end time.Time
	labelled("bridge", func() {
		start = time.Now()
		if err = pub.PublishAll(wctx, msgs, rig.Inflight); err == nil {
			end, err = rig.WaitEndOffsets(wctx, adm, k.Topics.Raw, base+int64(len(msgs)), endPoll)
		}
	})
	b.StopTimer()
	*cpu = cpuTime() - cpu0
	cancel()
	if rerr := <-done; rerr != nil {
		b.Fatal(rerr)
	}
	if err != nil {
		b.Fatal(err)
	}
	if got := metricValue(b, reg, "stackvps_bridge_produce_errors_total"); got != 0 {
		b.Fatalf("%v produce errors", got)
	}
	return end.Sub(start)
}

// awaitBridge publishes probe messages until the bridge received one (it is
// subscribed), then waits until every message it received is acknowledged,
// so the topic's end offsets are a stable base.
func awaitBridge(b *testing.B, pub *rig.Publisher, reg *prometheus.Registry, prefix string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	probe := simulate.Message{Topic: prefix + "/generic-json/probe", Payload: []byte(`{"probe":true}`)}
	for metricValue(b, reg, "stackvps_bridge_messages_received_total") == 0 {
		if err := pub.Publish(ctx, probe.Topic, probe.Payload); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ctx.Done():
			b.Fatal("the bridge never received a probe message")
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A probe published just before the first arrived may still be on its
	// way.
	time.Sleep(200 * time.Millisecond)
	for metricValue(b, reg, "stackvps_bridge_messages_acked_total") < metricValue(b, reg, "stackvps_bridge_messages_received_total") {
		select {
		case <-ctx.Done():
			b.Fatal("probe messages never acknowledged")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metricValue returns the sum of the samples of the counter or gauge name.
func metricValue(b *testing.B, g prometheus.Gatherer, name string) float64 {
	b.Helper()
	mfs, err := g.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return v
}

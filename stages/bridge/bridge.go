// Package bridge is the MQTT -> telemetry.raw stage. It subscribes with QoS 1
// (through shared subscriptions, so several bridges split the load) on a
// persistent MQTT v5 session, and acknowledges each message to the broker only
// after Kafka acknowledged its record from all in-sync replicas. The number of
// unacknowledged messages is bounded by the Receive Maximum the bridge
// announces, so a slow or absent Kafka stops the broker from sending more
// while the connection, and its keepalives, stay up; nothing is buffered
// beyond that bound and nothing is dropped.
//
// The record key is the device id taken from the topic, the value is the
// payload byte for byte, and headers carry mqtt-topic, received-at (RFC 3339,
// UTC) and provider (when the topic pattern names it). A message whose topic
// does not fit the pattern goes to the raw dead-letter topic with the reason.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/mqttclient"
	"github.com/stackvps/stackvps/pipeline"
)

// Header keys of telemetry.raw records (contract).
const (
	HeaderMQTTTopic  = "mqtt-topic"
	HeaderReceivedAt = "received-at"
	HeaderProvider   = "provider"
)

// Config is what the bridge reads of the configuration.
type Config struct {
	MQTT   config.MQTT
	Bridge config.Bridge
	// Topic and DLQ are telemetry.raw and telemetry.raw.dlq.
	Topic, DLQ string
	// DrainTimeout bounds waiting for in-flight records at shutdown.
	DrainTimeout time.Duration
}

// Producer is the part of pipeline.Producer the bridge uses.
type Producer interface {
	Produce(ctx context.Context, r pipeline.Record, ack func(error))
	Flush(ctx context.Context) error
}

// Deps are the bridge's collaborators.
type Deps struct {
	Producer   Producer
	Registerer prometheus.Registerer
	Health     *pipeline.Health
	Log        *slog.Logger
	// Now is the clock for received-at; nil means time.Now.
	Now func() time.Time
}

// Bridge is the stage. Create it with New and run it with Run.
type Bridge struct {
	cfg     Config
	deps    Deps
	pattern pattern
	log     *slog.Logger
	met     *metrics
	now     func() time.Time
	// mu orders taking a message (inflight.Add) against the start of the
	// drain (draining, then inflight.Wait): a WaitGroup must not grow from
	// zero while it is waited on.
	mu       sync.Mutex
	inflight sync.WaitGroup
	// draining is set at shutdown: messages arriving then are left
	// unacknowledged for the broker to redeliver on the next session.
	draining  bool
	connected atomic.Bool
}

// New validates cfg and registers the bridge's metrics and health check.
func New(cfg Config, deps Deps) (*Bridge, error) {
	if deps.Producer == nil || deps.Registerer == nil || deps.Health == nil || deps.Log == nil {
		return nil, errors.New("bridge: producer, registerer, health and log are required")
	}
	if cfg.Topic == "" || cfg.DLQ == "" {
		return nil, errors.New("bridge: topic and dead-letter topic are required")
	}
	p, err := compilePattern(cfg.Bridge.TopicPattern)
	if err != nil {
		return nil, fmt.Errorf("bridge.topic_pattern: %w", err)
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	met, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("bridge: registering metrics: %w", err)
	}
	b := &Bridge{cfg: cfg, deps: deps, pattern: p, log: deps.Log.With("stage", "bridge"), met: met, now: deps.Now}
	if b.now == nil {
		b.now = time.Now
	}
	met.receiveMax.Set(float64(cfg.Bridge.ReceiveMaximum))
	deps.Health.Add("mqtt:bridge", func(context.Context) error {
		if !b.connected.Load() {
			return errors.New("not connected to the MQTT broker")
		}
		return nil
	})
	return b, nil
}

// filters returns the subscription filters, shared when a group is set.
func (b *Bridge) filters() []string {
	out := make([]string, len(b.cfg.Bridge.Subscriptions))
	for i, f := range b.cfg.Bridge.Subscriptions {
		if b.cfg.Bridge.ShareGroup != "" {
			f = "$share/" + b.cfg.Bridge.ShareGroup + "/" + f
		}
		out[i] = f
	}
	return out
}

// Run connects, bridges until ctx is done, then drains: no new message is
// taken, records in flight get their Kafka acknowledgement (within the drain
// timeout) and their PUBACK, and the client disconnects, keeping its session
// so the broker queues what arrives meanwhile.
func (b *Bridge) Run(ctx context.Context) error {
	clientID := b.cfg.MQTT.EffectiveClientID()
	cc, err := mqttclient.ClientConfig(b.cfg.MQTT, mqttclient.Options{
		ClientID:       clientID,
		ReceiveMaximum: uint16(b.cfg.Bridge.ReceiveMaximum),
		ManualAck:      true,
		OnPublish:      b.onPublish,
		OnUp:           b.onUp,
		OnConnectError: func(err error) {
			b.met.connectErrors.Inc()
			b.log.Warn("mqtt connection attempt failed", "err", err)
		},
		Log: b.log,
	})
	if err != nil {
		return err
	}
	cc.OnConnectionDown = func() bool {
		b.connected.Store(false)
		b.met.connected.Set(0)
		b.log.Warn("mqtt connection lost; reconnecting")
		return true
	}
	// The connection outlives ctx so the drain can still send PUBACKs.
	connCtx, cancelConn := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConn()
	cm, err := autopaho.NewConnection(connCtx, cc)
	if err != nil {
		return fmt.Errorf("bridge: starting mqtt connection: %w", err)
	}
	b.log.Info("bridge started", "client_id", clientID, "filters", b.filters(), "topic", b.cfg.Topic,
		"receive_maximum", b.cfg.Bridge.ReceiveMaximum)
	select {
	case <-ctx.Done():
	case <-cm.Done():
		return errors.New("bridge: mqtt connection manager stopped")
	}
	return b.drain(ctx, cm)
}

func (b *Bridge) drain(ctx context.Context, cm *autopaho.ConnectionManager) error {
	b.mu.Lock()
	b.draining = true
	b.mu.Unlock()
	start := time.Now()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() { b.inflight.Wait(); close(done) }()
	var drainErr error
	select {
	case <-done:
	case <-dctx.Done():
		drainErr = fmt.Errorf("bridge: %d message(s) still in flight after %s; the broker redelivers them", int(b.met.inflightCount.Load()), b.cfg.DrainTimeout)
	}
	// PUBACKs are sent in order every 20ms; give them a moment to leave.
	select {
	case <-dctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
	if err := cm.Disconnect(dctx); err != nil && drainErr == nil {
		drainErr = fmt.Errorf("bridge: disconnecting: %w", err)
	}
	b.connected.Store(false)
	b.met.connected.Set(0)
	b.log.Info("bridge stopped", "drain_ms", time.Since(start).Milliseconds(), "err", drainErr)
	return drainErr
}

func (b *Bridge) onUp(cm *autopaho.ConnectionManager, ca *paho.Connack) {
	b.connected.Store(true)
	b.met.connected.Set(1)
	b.met.connects.Inc()
	b.log.Info("mqtt connected", "session_present", ca.SessionPresent)
	// Subscribe even when the broker kept the session: subscribing again to
	// a filter it has is harmless, and it is how filters added to
	// bridge.subscriptions since the last run take effect. (A filter removed
	// from the configuration stays in a kept session until it expires, or
	// until the client id changes.)
	subs := make([]paho.SubscribeOptions, 0, len(b.cfg.Bridge.Subscriptions))
	for _, f := range b.filters() {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	go func() {
		// OnConnectionUp must not block: subscribe in the background.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
		if err != nil {
			b.log.Error("subscribing failed; reconnecting will retry", "err", err)
			return
		}
		for i, rc := range sa.Reasons {
			if rc >= 0x80 {
				b.log.Error("subscription refused by the broker", "filter", subs[i].Topic, "reason_code", rc)
			}
		}
		b.log.Info("subscribed", "filters", b.filters())
	}()
}

// onPublish runs on paho's router goroutine and must not block: it hands the
// message to the producer and returns. The PUBACK goes out from the produce
// callback.
func (b *Bridge) onPublish(pr autopaho.PublishReceived) (bool, error) {
	pkt := pr.Packet
	b.mu.Lock()
	if b.draining {
		b.mu.Unlock()
		// Not acknowledged: the broker redelivers it to the next session.
		return true, nil
	}
	b.inflight.Add(1)
	b.mu.Unlock()
	received := b.now().UTC()
	b.met.received.Inc()
	b.met.inflightCount.Add(1)
	b.met.inflight.Inc()
	device, provider, ok := b.pattern.match(pkt.Topic)
	rec := pipeline.Record{
		Topic: b.cfg.Topic,
		Key:   []byte(device),
		Value: pkt.Payload,
		Time:  received,
		Headers: []pipeline.Header{
			{Key: HeaderMQTTTopic, Value: []byte(pkt.Topic)},
			{Key: HeaderReceivedAt, Value: []byte(received.Format(time.RFC3339Nano))},
		},
	}
	if provider != "" {
		rec.Headers = append(rec.Headers, pipeline.Header{Key: HeaderProvider, Value: []byte(provider)})
	}
	reason := ""
	if !ok {
		reason = "topic_mismatch"
		rec.Topic = b.cfg.DLQ
		rec.Key = []byte(pkt.Topic)
		rec.Headers = append(rec.Headers,
			pipeline.Header{Key: pipeline.HeaderError, Value: []byte(fmt.Sprintf("topic %q does not match bridge.topic_pattern %q", pkt.Topic, b.cfg.Bridge.TopicPattern))},
			pipeline.Header{Key: pipeline.HeaderErrorReason, Value: []byte(reason)},
			pipeline.Header{Key: pipeline.HeaderErrorStage, Value: []byte("bridge")})
	}
	start := time.Now()
	b.deps.Producer.Produce(context.Background(), rec, func(err error) {
		b.met.produce.Observe(time.Since(start).Seconds())
		if errors.Is(err, pipeline.ErrRecordTooLarge) {
			// Kafka will never take it. Leaving it unacknowledged would
			// stall every later PUBACK (they go out in order) and the broker
			// would redeliver it forever: dead-letter what fits, say so, and
			// acknowledge.
			b.log.Error("message too large for kafka; dead-lettering its first bytes", "mqtt_topic", pkt.Topic,
				"bytes", len(pkt.Payload), "err", err)
			b.deps.Producer.Produce(context.Background(), tooLarge(rec, b.cfg.DLQ, err), func(derr error) {
				if derr == nil {
					b.met.dead.WithLabelValues("record_too_large").Inc()
				}
				b.finish(pr, pkt, derr)
			})
			return
		}
		if err == nil && reason != "" {
			b.met.dead.WithLabelValues(reason).Inc()
		}
		b.finish(pr, pkt, err)
	})
	return true, nil
}

// finish acknowledges a message to the broker once Kafka has its record.
// After a produce error it stays unacknowledged (the producer fails records
// only when it is closing) and the broker redelivers it to the next session.
func (b *Bridge) finish(pr autopaho.PublishReceived, pkt *paho.Publish, err error) {
	defer b.inflight.Done()
	defer b.met.inflight.Dec()
	defer b.met.inflightCount.Add(-1)
	if err != nil {
		b.met.produceErrors.Inc()
		b.log.Error("kafka refused a record; the message stays unacknowledged", "mqtt_topic", pkt.Topic, "err", err)
		return
	}
	if pkt.QoS > 0 {
		if aerr := pr.Client.Ack(pkt); aerr != nil {
			b.log.Warn("acknowledging to the broker failed; it will redeliver", "err", aerr)
			return
		}
	}
	b.met.acked.Inc()
}

// maxDeadPayload is how much of a too-large payload is dead-lettered.
const maxDeadPayload = 64 << 10

// tooLarge is the dead letter of a message Kafka refused for its size: the
// first maxDeadPayload bytes, with headers saying why and how large it was.
func tooLarge(rec pipeline.Record, dlq string, err error) pipeline.Record {
	d := rec
	d.Topic = dlq
	if len(d.Value) > maxDeadPayload {
		d.Value = d.Value[:maxDeadPayload]
	}
	d.Headers = append(append([]pipeline.Header(nil), rec.Headers...),
		pipeline.Header{Key: pipeline.HeaderError, Value: []byte(err.Error())},
		pipeline.Header{Key: pipeline.HeaderErrorReason, Value: []byte("record_too_large")},
		pipeline.Header{Key: pipeline.HeaderErrorStage, Value: []byte("bridge")},
		pipeline.Header{Key: "original-size", Value: []byte(strconv.Itoa(len(rec.Value)))},
		pipeline.Header{Key: "truncated", Value: []byte(strconv.FormatBool(len(rec.Value) > maxDeadPayload))},
	)
	return d
}

type metrics struct {
	received, acked, produceErrors, connects, connectErrors prometheus.Counter
	dead                                                    *prometheus.CounterVec
	inflight, receiveMax, connected                         prometheus.Gauge
	produce                                                 prometheus.Histogram
	inflightCount                                           atomic.Int64
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "stackvps", "bridge"
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_received_total", Help: "MQTT messages received."}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_acked_total", Help: "MQTT messages written to Kafka (raw or dead-letter topic) and acknowledged to the broker."}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_dead_lettered_total", Help: "MQTT messages written to the raw dead-letter topic, by reason."}, []string{"reason"}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "produce_errors_total", Help: "Records Kafka refused; their messages stay unacknowledged for redelivery."}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_total", Help: "MQTT connections established."}),
		connectErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connect_errors_total", Help: "Failed MQTT connection attempts."}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "inflight_messages", Help: "Messages received and not yet acknowledged by Kafka."}),
		receiveMax: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "receive_maximum", Help: "The Receive Maximum announced to the broker: the bound on inflight_messages."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "connected", Help: "1 while connected to the MQTT broker."}),
		produce: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "kafka_produce_seconds", Help: "Time from receiving a message to Kafka's acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	for _, c := range []prometheus.Collector{m.received, m.acked, m.dead, m.produceErrors, m.connects,
		m.connectErrors, m.inflight, m.receiveMax, m.connected, m.produce} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

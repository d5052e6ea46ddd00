package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/stackvps/stackvps/config"
)

// Producer writes records to Kafka for components that are not Kafka
// consumers (the MQTT bridge, the HTTP ingest endpoint), with the same
// durability as stages: acks=all on an idempotent producer, retried until the
// record's context ends. Records with the same key keep their order.
type Producer struct {
	cl  *kgo.Client
	out *prometheus.CounterVec
	// name labels the producer's metrics.
	name string
}

// NewProducer creates a producer named name (used in its client id and
// metrics). It registers a readiness check on deps.Health.
func NewProducer(name string, deps Deps) (*Producer, error) {
	if deps.Metrics == nil || deps.Health == nil || deps.Log == nil {
		return nil, fmt.Errorf("producer %s: metrics, health and log are required", name)
	}
	clientID := deps.Kafka.ClientID + "-" + name
	hook, err := deps.Metrics.kafkaClient.hook(clientID)
	if err != nil {
		return nil, fmt.Errorf("producer %s: %w", name, err)
	}
	opts := append(clientOpts(deps.Kafka, clientID), ProducerOpts(deps.Kafka)...)
	opts = append(opts, kgo.WithHooks(hook), kgo.WithLogger(kslog.New(deps.Log.With("component", "kafka", "producer", name))))
	opts = append(opts, deps.ExtraOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("producer %s: creating kafka client: %w", name, err)
	}
	deps.Health.Add("kafka:"+name, func(ctx context.Context) error { return cl.Ping(ctx) })
	return &Producer{cl: cl, out: deps.Metrics.recordsOut, name: name}, nil
}

// ErrRecordTooLarge is the produce error for a record above the broker's or
// the client's size limit: retrying it can never succeed.
var ErrRecordTooLarge = errors.New("record too large for kafka")

// Produce sends r (r.Topic is required) and calls ack exactly once, with nil
// once Kafka has acknowledged the record from all in-sync replicas, or with
// the error that made it fail: ErrRecordTooLarge (permanent), or ctx ending
// or the client closing. Produce blocks while the client's buffer is full;
// ack is called from the client's goroutines and must not block for long.
func (p *Producer) Produce(ctx context.Context, r Record, ack func(error)) {
	if r.Topic == "" {
		ack(fmt.Errorf("producer %s: record without a topic", p.name))
		return
	}
	p.cl.Produce(ctx, toKgo(r, ""), func(kr *kgo.Record, err error) {
		switch {
		case err == nil:
			p.out.WithLabelValues(p.name, kr.Topic).Inc()
		case errors.Is(err, kerr.MessageTooLarge):
			err = fmt.Errorf("%w (%d bytes): %w", ErrRecordTooLarge, len(kr.Value), err)
		}
		ack(err)
	})
}

// Flush waits until every record produced so far is acknowledged or failed.
func (p *Producer) Flush(ctx context.Context) error { return p.cl.Flush(ctx) }

// BufferedRecords returns the records waiting for an acknowledgement.
func (p *Producer) BufferedRecords() int64 { return p.cl.BufferedProduceRecords() }

// Ping checks that a broker answers.
func (p *Producer) Ping(ctx context.Context) error { return p.cl.Ping(ctx) }

// Close closes the client; records still buffered fail. Flush first.
func (p *Producer) Close() { p.cl.Close() }

// NewLogger builds the process logger from the log section.
func NewLogger(cfg config.Log, w interface{ Write([]byte) (int, error) }) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

package pipeline

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/stackvps/stackvps/config"
)

// kafkaMetrics hands each Kafka client of the process its own kprom hook,
// labelled by client id, on the shared registry.
type kafkaMetrics struct {
	reg  prometheus.Registerer
	mu   sync.Mutex
	seen map[string]bool
}

func newKafkaMetrics(reg prometheus.Registerer) (*kafkaMetrics, error) {
	return &kafkaMetrics{reg: reg, seen: map[string]bool{}}, nil
}

func (k *kafkaMetrics) hook(clientID string) (kgo.Hook, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen[clientID] {
		return nil, fmt.Errorf("kafka client id %q is used twice in this process", clientID)
	}
	k.seen[clientID] = true
	return kprom.NewMetrics("stackvps", kprom.Subsystem("kafka"), kprom.Registerer(k.reg), kprom.WithClientLabel()), nil
}

// clientOpts returns the options every client of the process shares.
func clientOpts(cfg config.Kafka, clientID string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(clientID),
		kgo.DialTimeout(cfg.DialTimeout.Std()),
	}
}

// ProducerOpts are the settings of every producer of the pipeline: acks from
// all in-sync replicas on an idempotent producer (franz-go's default, stated
// here so nobody weakens it by accident), retried until the context ends; the
// configured batch compression; the sticky key partitioner. Exported so the
// benchmarks' raw limits produce exactly as the stages do.
func ProducerOpts(cfg config.Kafka) []kgo.Opt {
	codecs := map[string]kgo.CompressionCodec{
		"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	}
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codecs[cfg.Compression], kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}
}

func toKgo(r Record, defaultTopic string) *kgo.Record {
	kr := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Timestamp: r.Time}
	if kr.Topic == "" {
		kr.Topic = defaultTopic
	}
	if len(r.Headers) > 0 {
		kr.Headers = make([]kgo.RecordHeader, len(r.Headers))
		for i, h := range r.Headers {
			kr.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	return kr
}

func fromKgo(kr *kgo.Record) Record {
	r := Record{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Key: kr.Key, Value: kr.Value, Time: kr.Timestamp}
	if len(kr.Headers) > 0 {
		r.Headers = make([]Header, len(kr.Headers))
		for i, h := range kr.Headers {
			r.Headers[i] = Header{Key: h.Key, Value: h.Value}
		}
	}
	return r
}

package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the series every Kafka stage shares, labelled by stage. Create
// one per registry with NewMetrics and hand it to every stage of the process.
type Metrics struct {
	recordsIn   *prometheus.CounterVec
	recordsOut  *prometheus.CounterVec
	errors      *prometheus.CounterVec
	dlq         *prometheus.CounterVec
	retries     *prometheus.CounterVec
	process     *prometheus.HistogramVec
	commit      *prometheus.HistogramVec
	batch       *prometheus.HistogramVec
	lag         *prometheus.GaugeVec
	ready       *prometheus.GaugeVec
	inFlight    *prometheus.GaugeVec
	endToEnd    *prometheus.HistogramVec
	reg         prometheus.Registerer
	kafkaClient *kafkaMetrics
}

// NewMetrics registers the stage series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns, sub = "stackvps", "stage"
	m := &Metrics{
		reg: reg,
		recordsIn: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "records_in_total", Help: "Records consumed by the stage."}, []string{"stage"}),
		recordsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "records_out_total", Help: "Records produced by the stage and acknowledged by Kafka, by topic."}, []string{"stage", "topic"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "errors_total", Help: "Processing errors, by kind (permanent or transient)."}, []string{"stage", "kind"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "dlq_total", Help: "Records sent to the dead-letter topic, by reason."}, []string{"stage", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "retries_total", Help: "Retries after transient errors."}, []string{"stage"}),
		process: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "process_seconds", Help: "Time to process one record, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12)}, []string{"stage"}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "commit_seconds", Help: "Time from the end of processing a poll to its offsets committed (produce acks included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"stage"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "batch_records", Help: "Records per poll.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9)}, []string{"stage"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "consumer_lag_records", Help: "Records between the partition's high watermark and the stage's position."}, []string{"stage", "topic", "partition"}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "ready", Help: "1 while the stage is running and its last poll succeeded."}, []string{"stage"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "in_flight_records", Help: "Records consumed whose offsets are not committed yet."}, []string{"stage"}),
		endToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "record_age_seconds", Help: "Age of a record (now minus its Kafka timestamp) when the stage finished it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12)}, []string{"stage"}),
	}
	for _, c := range []prometheus.Collector{m.recordsIn, m.recordsOut, m.errors, m.dlq, m.retries,
		m.process, m.commit, m.batch, m.lag, m.ready, m.inFlight, m.endToEnd} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	km, err := newKafkaMetrics(reg)
	if err != nil {
		return nil, err
	}
	m.kafkaClient = km
	return m, nil
}

// stageMetrics is Metrics curried for one stage.
type stageMetrics struct {
	recordsIn prometheus.Counter
	errPerm   prometheus.Counter
	errTrans  prometheus.Counter
	retries   prometheus.Counter
	process   prometheus.Observer
	commit    prometheus.Observer
	batch     prometheus.Observer
	ready     prometheus.Gauge
	inFlight  prometheus.Gauge
	endToEnd  prometheus.Observer
	m         *Metrics
	stage     string
}

func (m *Metrics) forStage(stage string) *stageMetrics {
	return &stageMetrics{
		recordsIn: m.recordsIn.WithLabelValues(stage),
		errPerm:   m.errors.WithLabelValues(stage, "permanent"),
		errTrans:  m.errors.WithLabelValues(stage, "transient"),
		retries:   m.retries.WithLabelValues(stage),
		process:   m.process.WithLabelValues(stage),
		commit:    m.commit.WithLabelValues(stage),
		batch:     m.batch.WithLabelValues(stage),
		ready:     m.ready.WithLabelValues(stage),
		inFlight:  m.inFlight.WithLabelValues(stage),
		endToEnd:  m.endToEnd.WithLabelValues(stage),
		m:         m,
		stage:     stage,
	}
}

func (s *stageMetrics) out(topic string, n int) {
	s.m.recordsOut.WithLabelValues(s.stage, topic).Add(float64(n))
}

func (s *stageMetrics) dead(reason string) { s.m.dlq.WithLabelValues(s.stage, reason).Inc() }

func (s *stageMetrics) setLag(topic, partition string, lag int64) {
	s.m.lag.WithLabelValues(s.stage, topic, partition).Set(float64(lag))
}

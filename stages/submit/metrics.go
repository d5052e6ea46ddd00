package submit

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the stage's own metrics; the pipeline runtime adds records
// in and out, errors, DLQ and latency of the Kafka side.
type metrics struct {
	records     *prometheus.CounterVec
	filled      *prometheus.CounterVec
	attempts    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	slots       *prometheus.GaugeVec
	oldest      *prometheus.GaugeVec
	leader      *prometheus.GaugeVec
	created     prometheus.Counter
	writtenOff  prometheus.Counter
	backfilled  prometheus.Counter
	maintainErr prometheus.Counter
	passes      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "stackvps", "submit"
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_total",
			Help: "Compliance records consumed, by outcome: routed (to at least one config slot), no_slot (no active config has a slot at the record's instant), bad_record."},
			[]string{"outcome"}),
		filled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "slots_filled_total",
			Help: "Slot fills from compliance records, by source and result: filled (data set or replaced by a higher version), corrected (a higher version after the slot was sent: recorded, not resent), stale (same or lower version)."},
			[]string{"source", "result"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "attempts_total",
			Help: "Submission attempts by source and outcome: confirmed, rejected, rejected_terminal, transient, rate_limited, unknown, invalid (refused locally, not sent), set_aside (unknown outcome without duplicate detection), resolved (confirmed by verification)."},
			[]string{"source", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help:    "Duration of the requests sent to the regulator, by source.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 10)}, []string{"source"}),
		slots: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "slots",
			Help: "Slots by source and status (refreshed every submit.maintain_interval)."}, []string{"source", "status"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "oldest_pending_age_seconds",
			Help: "Age of the oldest slot of a source with data that is not yet final (PENDING with data, SENT, ERROR with a retry); 0 when none."},
			[]string{"source"}),
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "leader",
			Help: "1 while this process holds the source's leader lock and submits for it."}, []string{"source"}),
		created: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "slots_created_total",
			Help: "PENDING slots created ahead of time by slot maintenance."}),
		writtenOff: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "slots_written_off_total",
			Help: "Slots written off (MISSING) after submit.write_off_after without data."}),
		backfilled: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "slots_backfilled_total",
			Help: "Slots filled from the readings table because no compliance record filled them within submit.backfill_after."}),
		maintainErr: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "maintenance_errors_total",
			Help: "Slot maintenance rounds that failed (database unavailable)."}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "passes_total",
			Help: "Passes of the source's leader over its due slots (each reads them and submits what is due), by source: a leader whose passes stop rising is stuck."},
			[]string{"source"}),
	}
	for _, c := range []prometheus.Collector{m.records, m.filled, m.attempts, m.latency, m.slots, m.oldest, m.leader,
		m.created, m.writtenOff, m.backfilled, m.maintainErr, m.passes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering submit metrics: %w", err)
		}
	}
	return m, nil
}

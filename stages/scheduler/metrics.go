package scheduler

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Run statuses as counted in stackvps_scheduler_runs_total. abandoned is
// an attempt whose runner stopped heartbeating (it died), counted by the
// leader that took the period over.
const (
	statusSucceeded = "succeeded"
	statusFailed    = "failed"
	statusAbandoned = "abandoned"
)

type metrics struct {
	leader      prometheus.Gauge
	changes     prometheus.Counter
	runs        *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	skipped     *prometheus.CounterVec
	passes      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "stackvps", "scheduler"
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "leader", Help: "1 while this replica is the scheduler leader (holds the advisory lock), 0 otherwise."}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "leadership_acquired_total", Help: "Times this replica became the leader."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "runs_total", Help: "Job attempts finished by this replica, by job and status (succeeded, failed; abandoned: a dead runner's attempt found by this leader)."},
			[]string{"job", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "run_duration_seconds", Help: "Duration of job attempts run by this replica.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}, []string{"job"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "last_success_timestamp_seconds", Help: "When the job last succeeded (any replica, as read from scheduler_runs when this replica last led or ran it); take max() across replicas."},
			[]string{"job"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "skipped_periods_total", Help: "Periods that passed while no replica led and were not run (only the latest missed period runs)."},
			[]string{"job"}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "passes_total", Help: "Passes of the leader over its jobs' schedules (each claims and starts the periods that are due): rises several times a second while this replica leads; a leader whose passes stop rising is stuck."}),
	}
	for _, c := range []prometheus.Collector{m.leader, m.changes, m.runs, m.duration, m.lastSuccess, m.skipped, m.passes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering scheduler metrics: %w", err)
		}
	}
	return m, nil
}

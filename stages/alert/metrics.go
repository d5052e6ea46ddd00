package alert

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	readings      prometheus.Counter
	evaluated     *prometheus.CounterVec
	opened        *prometheus.CounterVec
	resolved      *prometheus.CounterVec
	renotified    *prometheus.CounterVec
	open          *prometheus.GaugeVec
	notifications prometheus.Counter
	outbox        prometheus.Gauge
	gapSkipped    *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	errors        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "stackvps", "alert"
	m := &metrics{
		readings: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "readings_total", Help: "Readings consumed by the alert stage."}),
		evaluated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rules_evaluated_total", Help: "Rule evaluations (one rule judged for one variable), by kind."}, []string{"kind"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "alerts_opened_total", Help: "Alerts opened, by kind."}, []string{"kind"}),
		resolved: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "alerts_resolved_total", Help: "Alerts resolved because their condition cleared, by kind."}, []string{"kind"}),
		renotified: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "alerts_renotified_total", Help: "Re-notifications of alerts still firing, by kind."}, []string{"kind"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "open_alerts", Help: "Unresolved alerts (open or acknowledged) at the last evaluation, by kind."}, []string{"kind"}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "notifications_produced_total", Help: "Notifications produced to the notifications topic and acknowledged by Kafka."}),
		outbox: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "outbox_pending_events", Help: "Alert events whose notifications are not produced yet, at the last evaluation."}),
		gapSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "gap_checks_skipped_total", Help: "Data-gap evaluations of a partition skipped, by reason (lagging)."}, []string{"reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "evaluation_seconds", Help: "Time to evaluate the rules of one reading (path reading) or one periodic pass (path periodic).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"path"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "errors_total", Help: "Errors of the periodic evaluation and the outbox, by step; retried at the next evaluation."}, []string{"step"}),
	}
	for _, c := range []prometheus.Collector{m.readings, m.evaluated, m.opened, m.resolved, m.renotified, m.open,
		m.notifications, m.outbox, m.gapSkipped, m.latency, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

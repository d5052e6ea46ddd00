package notify

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	notifications *prometheus.CounterVec   // outcome
	deliveries    *prometheus.CounterVec   // channel, status
	retries       *prometheus.CounterVec   // channel
	reclaimed     *prometheus.CounterVec   // channel
	sendSeconds   *prometheus.HistogramVec // channel
	latency       *prometheus.HistogramVec // channel
	queue         *prometheus.GaugeVec     // channel, status
	inFlight      *prometheus.GaugeVec     // channel
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stackvps_notify_notifications_total",
			Help: "Notifications consumed, by outcome: queued (delivery rows written), duplicate (already queued), skipped_* (nobody to deliver to).",
		}, []string{"outcome"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stackvps_notify_deliveries_total",
			Help: "Delivery rows by channel and status reached: queued, sent, retry (failed, will be retried), failed (gave up).",
		}, []string{"channel", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stackvps_notify_retries_total",
			Help: "Delivery attempts after the first, by channel.",
		}, []string{"channel"}),
		reclaimed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stackvps_notify_reclaimed_total",
			Help: "Deliveries left \"sending\" by a replica that stopped mid-send and sent again with the same idempotency key, by channel.",
		}, []string{"channel"}),
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stackvps_notify_send_duration_seconds",
			Help:    "Duration of one delivery attempt (the external call), by channel.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"channel"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stackvps_notify_delivery_latency_seconds",
			Help:    "From the notification's creation to its delivery, by channel.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 18),
		}, []string{"channel"}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stackvps_notify_queue_depth",
			Help: "Deliveries not finished, by channel and status (queued, sending), as last counted.",
		}, []string{"channel", "status"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stackvps_notify_in_flight",
			Help: "Deliveries being sent by this process, by channel.",
		}, []string{"channel"}),
	}
	for _, c := range []prometheus.Collector{m.notifications, m.deliveries, m.retries, m.reclaimed, m.sendSeconds, m.latency, m.queue, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering notify metrics: %w", err)
		}
	}
	for _, ch := range Channels {
		for _, st := range []string{"queued", "sent", "retry", "failed"} {
			m.deliveries.WithLabelValues(ch, st)
		}
		m.retries.WithLabelValues(ch)
		m.inFlight.WithLabelValues(ch)
	}
	return m, nil
}

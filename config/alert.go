package config

import "time"

// Alert configures the telemetry.readings -> notifications stage (alert
// rules).
type Alert struct {
	// EvaluateInterval is how often time-based rules (data gap, compliance
	// slots) are evaluated, rules and open alerts are reloaded from the
	// database, and the outbox of alert events is produced again. Default
	// 30s.
	EvaluateInterval Duration `yaml:"evaluate_interval"`
	// RenotifyInterval is how long an open, unacknowledged alert that is
	// still firing waits before it is notified again, for rules without a
	// renotify_interval of their own. Default 6h.
	RenotifyInterval Duration `yaml:"renotify_interval"`
	// IdleAfter is how long an input partition must have yielded no record,
	// while the stage polls, to count as caught up: its data gaps are then
	// judged on the processing clock instead of the arrival clock. Default
	// 10s.
	IdleAfter Duration `yaml:"idle_after"`
	// LagTolerance is how far a partition's arrival clock (the latest
	// received_at consumed) may be behind the processing clock, while it
	// still delivers records, with the partition counted as caught up;
	// beyond it the partition is lagging and its data gaps are not judged.
	// Default 1m.
	LagTolerance Duration `yaml:"lag_tolerance"`
	// ProduceTimeout bounds waiting for Kafka to acknowledge the
	// notifications of one batch of alert events; what is not acknowledged
	// stays in the outbox and is produced again. Default 30s.
	ProduceTimeout Duration `yaml:"produce_timeout"`
}

func defaultAlert() Alert {
	return Alert{
		EvaluateInterval: Duration(30 * time.Second),
		RenotifyInterval: Duration(6 * time.Hour),
		IdleAfter:        Duration(10 * time.Second),
		LagTolerance:     Duration(time.Minute),
		ProduceTimeout:   Duration(30 * time.Second),
	}
}

func (a Alert) validate(p *problems) {
	p.positive("alert.evaluate_interval", a.EvaluateInterval)
	p.positive("alert.renotify_interval", a.RenotifyInterval)
	p.positive("alert.idle_after", a.IdleAfter)
	p.positive("alert.lag_tolerance", a.LagTolerance)
	p.positive("alert.produce_timeout", a.ProduceTimeout)
}

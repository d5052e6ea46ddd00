package config

import "time"

// Alert configures the telemetry.readings -> notifications stage (alert
// rules).
type Alert struct {
	// EvaluateInterval is how often time-based rules (data gap, compliance
	// slots) are evaluated. Default 30s.
	EvaluateInterval Duration `yaml:"evaluate_interval"`
}

func defaultAlert() Alert {
	return Alert{EvaluateInterval: Duration(30 * time.Second)}
}

func (a Alert) validate(p *problems) {
	p.positive("alert.evaluate_interval", a.EvaluateInterval)
}

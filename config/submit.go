package config

import "time"

// Submit configures the compliance.records -> regulators stage.
type Submit struct {
	// PollInterval is how often the submitter looks for due slots when
	// nothing woke it. Default 5s.
	PollInterval Duration `yaml:"poll_interval"`
}

func defaultSubmit() Submit {
	return Submit{PollInterval: Duration(5 * time.Second)}
}

func (s Submit) validate(p *problems) {
	p.positive("submit.poll_interval", s.PollInterval)
}

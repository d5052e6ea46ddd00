package config

import "time"

// Submit configures the compliance.records -> regulators stage: how slots
// are created, filled, written off and submitted (see stages/submit).
type Submit struct {
	// PollInterval is how often the submitter looks for due slots when
	// nothing woke it. Default 5s.
	PollInterval Duration `yaml:"poll_interval"`
	// SlotsAhead is how far ahead of now slots are created (PENDING, no
	// data) for every active config, so a missing hour is visible as a row.
	// Default 24h.
	SlotsAhead Duration `yaml:"slots_ahead"`
	// MaintainInterval is how often slots are created and stale ones written
	// off. Default 1m.
	MaintainInterval Duration `yaml:"maintain_interval"`
	// MissingAfter is how long after its instant a slot without data counts
	// as missing (alerts). Default 6h.
	MissingAfter Duration `yaml:"missing_after"`
	// WriteOffAfter is how long after its instant a slot without data is
	// written off (MISSING); it also bounds how far back slots are created
	// for a config whose start_date is older. Default 720h (30 days).
	WriteOffAfter Duration `yaml:"write_off_after"`
	// BackfillAfter is how long after its instant a slot still without
	// data is looked up in the readings table (and looked up again this
	// often while it stays empty): the slots of a config created after its
	// data arrived, or whose readings the aggregate refused as too late.
	// The compliance record normally fills a slot within a minute or two of
	// its instant. Default 10m.
	BackfillAfter Duration `yaml:"backfill_after"`
	// UnknownAfter is how long a SENT slot may wait for its outcome (a
	// timeout, a crash between sending and recording) before it is sent
	// again relying on the regulator's duplicate answer, or, for a protocol
	// without duplicate detection, set aside for review. Never shorter than
	// twice the source's request timeout. Default 15m.
	UnknownAfter Duration `yaml:"unknown_after"`
	// BackoffInitial and BackoffMax bound the exponential backoff (with
	// jitter) after a transient failure (network, 5xx). Defaults 30s and 1h.
	BackoffInitial Duration `yaml:"backoff_initial"`
	BackoffMax     Duration `yaml:"backoff_max"`
	// LockRetry is how often a replica that does not hold a source's leader
	// lock tries to take it: the takeover delay after the holder dies.
	// Default 2s.
	LockRetry Duration `yaml:"lock_retry"`
	// BatchSize is how many due slots of a source are read at once. Default
	// 50.
	BatchSize int `yaml:"batch_size"`
}

func defaultSubmit() Submit {
	return Submit{
		PollInterval:     Duration(5 * time.Second),
		SlotsAhead:       Duration(24 * time.Hour),
		MaintainInterval: Duration(time.Minute),
		MissingAfter:     Duration(6 * time.Hour),
		WriteOffAfter:    Duration(720 * time.Hour),
		BackfillAfter:    Duration(10 * time.Minute),
		UnknownAfter:     Duration(15 * time.Minute),
		BackoffInitial:   Duration(30 * time.Second),
		BackoffMax:       Duration(time.Hour),
		LockRetry:        Duration(2 * time.Second),
		BatchSize:        50,
	}
}

func (s Submit) validate(p *problems) {
	p.positive("submit.poll_interval", s.PollInterval)
	p.positive("submit.slots_ahead", s.SlotsAhead)
	p.positive("submit.maintain_interval", s.MaintainInterval)
	p.positive("submit.missing_after", s.MissingAfter)
	p.positive("submit.write_off_after", s.WriteOffAfter)
	p.positive("submit.backfill_after", s.BackfillAfter)
	p.positive("submit.unknown_after", s.UnknownAfter)
	p.positive("submit.backoff_initial", s.BackoffInitial)
	p.positive("submit.backoff_max", s.BackoffMax)
	p.positive("submit.lock_retry", s.LockRetry)
	if s.BackoffMax < s.BackoffInitial {
		p.addf("submit.backoff_max", "must not be below submit.backoff_initial (%s); got %s", s.BackoffInitial, s.BackoffMax)
	}
	if s.WriteOffAfter > 0 && s.MissingAfter > s.WriteOffAfter {
		p.addf("submit.missing_after", "must not be above submit.write_off_after (%s); got %s", s.WriteOffAfter, s.MissingAfter)
	}
	if s.BatchSize <= 0 {
		p.addf("submit.batch_size", "must be positive; got %d", s.BatchSize)
	}
}

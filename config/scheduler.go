package config

import "time"

// Scheduler configures the scheduler stage: periodic jobs run by exactly one
// replica (the leader).
type Scheduler struct {
	// LeaderCheck is how often a replica that is not the leader tries to
	// take over. Default 2s.
	LeaderCheck Duration `yaml:"leader_check"`
}

func defaultScheduler() Scheduler {
	return Scheduler{LeaderCheck: Duration(2 * time.Second)}
}

func (s Scheduler) validate(p *problems) {
	p.positive("scheduler.leader_check", s.LeaderCheck)
}

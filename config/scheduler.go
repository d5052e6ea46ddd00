package config

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/stages/scheduler/schedule"
)

// Scheduler configures the scheduler stage: periodic jobs run by exactly one
// replica (the leader, chosen by a PostgreSQL advisory lock), each period of
// each job once (see stages/scheduler).
type Scheduler struct {
	// LeaderCheck is how often a replica that is not the leader tries to
	// take over, how often the leader checks its database session (and steps
	// down when it is gone), and how often a running job's heartbeat is
	// written. Default 2s.
	LeaderCheck Duration `yaml:"leader_check"`
	// TimeZone is the IANA zone of wall-clock schedules ("daily 07:00",
	// cron) and of the days the daily report covers. Default
	// America/Santiago.
	TimeZone string `yaml:"time_zone"`
	// HeartbeatTimeout is how long a running job's heartbeat may be silent
	// before the leader considers its runner dead and runs the period again.
	// At least three times leader_check. Default 30s.
	HeartbeatTimeout Duration `yaml:"heartbeat_timeout"`
	// MaxAttempts is how many times one period of a job is attempted when it
	// fails (the first run included) while it is still the job's latest
	// period. Default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// RetryAfter is the wait after a failed attempt before the next.
	// Default 5m.
	RetryAfter Duration `yaml:"retry_after"`
	// StaleAfter is how long an active point with an active device may go
	// without a reading before health_check reports it stale. Default 2h.
	StaleAfter Duration `yaml:"stale_after"`
	// MaxLag is the consumer lag (records, summed over a group's partitions)
	// above which health_check reports a stage's consumer group. Default
	// 10000.
	MaxLag int64 `yaml:"max_lag"`
	// CheckTimeout bounds each dependency check of health_check. Default
	// 10s.
	CheckTimeout Duration `yaml:"check_timeout"`
	// Jobs maps each job to its schedule and whether it runs. The jobs are
	// daily_report, health_check and source_sync; an entry given in the file
	// replaces that job's default entry, an omitted schedule keeps the
	// default schedule and an omitted enabled means true. Schedules:
	// "every <duration>" (multiples of it since the Unix epoch), "daily
	// HH:MM" in time_zone, or a 5-field cron expression in time_zone.
	// Defaults: daily_report "daily 07:00", health_check "every 1h",
	// source_sync "every 6h", all enabled.
	Jobs map[string]SchedulerJob `yaml:"jobs"`
}

// SchedulerJob is one job's entry in scheduler.jobs.
type SchedulerJob struct {
	// Schedule says when the job runs; empty keeps the job's default.
	Schedule string `yaml:"schedule"`
	// Enabled runs the job; false keeps it registered but never run.
	// Default true.
	Enabled bool `yaml:"enabled"`
}

// UnmarshalYAML decodes a job entry strictly (unknown keys are errors),
// with enabled true unless given.
func (j *SchedulerJob) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("must be a mapping with schedule and enabled")
	}
	out := SchedulerJob{Enabled: true}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "schedule":
			if v.Kind != yaml.ScalarNode || v.Decode(&out.Schedule) != nil {
				return fmt.Errorf("schedule must be a string such as \"every 1h\" (line %d)", v.Line)
			}
		case "enabled":
			if v.Kind != yaml.ScalarNode || v.Decode(&out.Enabled) != nil {
				return fmt.Errorf("enabled must be true or false (line %d)", v.Line)
			}
		default:
			return fmt.Errorf("unknown key %q (line %d); want schedule or enabled", k.Value, k.Line)
		}
	}
	*j = out
	return nil
}

// SchedulerJobNames are the jobs scheduler.jobs may name.
func SchedulerJobNames() []string { return []string{"daily_report", "health_check", "source_sync"} }

func defaultSchedulerJobs() map[string]SchedulerJob {
	return map[string]SchedulerJob{
		"daily_report": {Schedule: "daily 07:00", Enabled: true},
		"health_check": {Schedule: "every 1h", Enabled: true},
		"source_sync":  {Schedule: "every 6h", Enabled: true},
	}
}

// JobSchedule returns the schedule of job name: its entry's, or the
// default when the entry leaves it empty.
func (s Scheduler) JobSchedule(name string) string {
	if j, ok := s.Jobs[name]; ok && j.Schedule != "" {
		return j.Schedule
	}
	return defaultSchedulerJobs()[name].Schedule
}

func defaultScheduler() Scheduler {
	return Scheduler{
		LeaderCheck:      Duration(2 * time.Second),
		TimeZone:         "America/Santiago",
		HeartbeatTimeout: Duration(30 * time.Second),
		MaxAttempts:      3,
		RetryAfter:       Duration(5 * time.Minute),
		StaleAfter:       Duration(2 * time.Hour),
		MaxLag:           10000,
		CheckTimeout:     Duration(10 * time.Second),
		Jobs:             defaultSchedulerJobs(),
	}
}

func (s Scheduler) validate(p *problems) {
	p.positive("scheduler.leader_check", s.LeaderCheck)
	if _, err := time.LoadLocation(s.TimeZone); err != nil || s.TimeZone == "" {
		p.addf("scheduler.time_zone", "must be an IANA time zone such as America/Santiago; got %q", s.TimeZone)
	}
	if s.HeartbeatTimeout < 3*s.LeaderCheck {
		p.addf("scheduler.heartbeat_timeout", "must be at least three times scheduler.leader_check (%s); got %s", s.LeaderCheck, s.HeartbeatTimeout)
	}
	if s.MaxAttempts < 1 {
		p.addf("scheduler.max_attempts", "must be at least 1; got %d", s.MaxAttempts)
	}
	p.positive("scheduler.retry_after", s.RetryAfter)
	p.positive("scheduler.stale_after", s.StaleAfter)
	if s.MaxLag < 1 {
		p.addf("scheduler.max_lag", "must be at least 1; got %d", s.MaxLag)
	}
	p.positive("scheduler.check_timeout", s.CheckTimeout)
	known := SchedulerJobNames()
	names := make([]string, 0, len(s.Jobs))
	for name := range s.Jobs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !slices.Contains(known, name) {
			p.addf("scheduler.jobs."+name, "unknown job (known: %s)", strings.Join(known, ", "))
			continue
		}
		if _, err := schedule.Parse(s.JobSchedule(name)); err != nil {
			p.addf("scheduler.jobs."+name+".schedule", "%v", err)
		}
	}
}

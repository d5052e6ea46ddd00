package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
)

func TestSchedulerJobs(t *testing.T) {
	cases := []struct {
		name, yaml, errContains string
		check                   func(t *testing.T, s config.Scheduler)
	}{
		{name: "partial entry keeps the default schedule and enables",
			yaml: "scheduler:\n  jobs:\n    daily_report: {enabled: false}\n    health_check: {schedule: every 10m}\n",
			check: func(t *testing.T, s config.Scheduler) {
				require.False(t, s.Jobs["daily_report"].Enabled)
				require.Equal(t, "daily 07:00", s.JobSchedule("daily_report"))
				require.True(t, s.Jobs["health_check"].Enabled)
				require.Equal(t, "every 10m", s.JobSchedule("health_check"))
				require.Equal(t, "every 6h", s.JobSchedule("source_sync"), "an omitted job keeps its default entry")
			}},
		{name: "cron", yaml: "scheduler:\n  jobs:\n    source_sync: {schedule: '0 */6 * * *'}\n"},
		{name: "unknown job", yaml: "scheduler:\n  jobs:\n    nightly: {schedule: daily 01:00}\n", errContains: "scheduler.jobs.nightly: unknown job"},
		{name: "bad schedule", yaml: "scheduler:\n  jobs:\n    health_check: {schedule: hourly}\n", errContains: "scheduler.jobs.health_check.schedule: invalid schedule"},
		{name: "bad daily", yaml: "scheduler:\n  jobs:\n    daily_report: {schedule: daily 25:00}\n", errContains: "scheduler.jobs.daily_report.schedule"},
		{name: "unknown key in a job", yaml: "scheduler:\n  jobs:\n    daily_report: {when: daily 07:00}\n", errContains: `unknown key "when"`},
		{name: "bad zone", yaml: "scheduler:\n  time_zone: Mars/Olympus\n", errContains: "scheduler.time_zone"},
		{name: "heartbeat below leader check", yaml: "scheduler:\n  heartbeat_timeout: 3s\n", errContains: "scheduler.heartbeat_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.yaml), 0o600))
			cfg, err := config.Load(path, nil)
			if tc.errContains != "" {
				require.ErrorContains(t, err, tc.errContains)
				return
			}
			require.NoError(t, err)
			if tc.check != nil {
				tc.check(t, cfg.Scheduler)
			}
		})
	}
}

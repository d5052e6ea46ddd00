package main

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
)

// TestRunSchedulerIntegration runs two `stackvps run --stages scheduler`
// processes: one leads and runs every job (the health check finds the
// unreachable MQTT broker and a point that never reported, and tells the
// admin through the notifications topic; source_sync fills
// compliance_sources); SIGKILL of the leader hands the jobs to the other
// within seconds, and no period runs twice.
func TestRunSchedulerIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	kafka := testenv.Kafka(t, 1)
	ctx := t.Context()
	pool := migratedPool(t, db)
	_, err := pool.Exec(ctx, `INSERT INTO users (email, role) VALUES ('root@example.cl', 'admin');
		INSERT INTO catchment_points (code, name) VALUES ('P-1', 'Pozo Norte');
		INSERT INTO devices (id, point) VALUES ('dev-1', 'P-1')`)
	require.NoError(t, err)
	cfgFile := filepath.Join(t.TempDir(), "stackvps.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`scheduler:
  leader_check: 500ms
  heartbeat_timeout: 3s
  check_timeout: 2s
  jobs:
    health_check: {schedule: every 2s}
    source_sync: {schedule: every 2s}
`), 0o600))

	type replica struct {
		p    *proc
		base string
	}
	start := func() replica {
		listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
		p := startProc(t, concat(dbEnv(db), kafkaEnv(kafka), []string{
			"STACKVPS_HTTP_LISTEN=" + listen,
			"MQTT_BROKER=" + deadAddr(t),
		}), "--config", cfgFile, "run", "--stages", "scheduler")
		return replica{p: p, base: "http://" + listen}
	}
	leaderOf := func(r replica) float64 {
		_, m, err := httpGet(ctx, r.base+"/metrics")
		if err != nil {
			return -1
		}
		return metricValue(m, "stackvps_scheduler_leader")
	}
	a, b := start(), start()
	require.Eventually(t, func() bool { return leaderOf(a)+leaderOf(b) == 1 }, 30*time.Second, 100*time.Millisecond, "one leader")

	count := func(sql string) int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, sql).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool {
		return count(`SELECT count(DISTINCT job) FROM scheduler_runs WHERE status = 'succeeded'`) == 3
	}, 60*time.Second, 200*time.Millisecond, "every job succeeded once")
	require.Equal(t, 3, count(`SELECT count(*) FROM compliance_sources`), "source_sync wrote the built-in sources")
	var notifications int64
	require.Eventually(t, func() bool {
		ends, err := pipeline.EndOffsets(ctx, kafka, []string{kafka.Topics.Notifications})
		notifications = ends[kafka.Topics.Notifications]
		return err == nil && notifications > 0
	}, 30*time.Second, 200*time.Millisecond, "the health check notified the admin")
	var details string
	require.NoError(t, pool.QueryRow(ctx, `SELECT details::text FROM scheduler_runs WHERE job = 'health_check' AND status = 'succeeded'
		ORDER BY scheduled_for DESC LIMIT 1`).Scan(&details))
	require.Contains(t, details, `"subject": "mqtt"`)
	require.Contains(t, details, `"subject": "P-1"`)

	leader, survivor := a, b
	if leaderOf(b) == 1 {
		leader, survivor = b, a
	}
	killed := time.Now()
	leader.p.signal(t, syscall.SIGKILL)
	leader.p.wait(t, 10*time.Second)
	require.Eventually(t, func() bool { return leaderOf(survivor) == 1 }, 10*time.Second, 50*time.Millisecond, "the survivor leads")
	t.Logf("the survivor leads %s after the kill", time.Since(killed))
	require.Less(t, time.Since(killed), 5*time.Second)
	n := count(`SELECT count(*) FROM scheduler_runs WHERE job = 'health_check'`)
	require.Eventually(t, func() bool {
		return count(`SELECT count(*) FROM scheduler_runs WHERE job = 'health_check' AND status = 'succeeded'`) >= n+1
	}, 30*time.Second, 200*time.Millisecond, "the next period runs")
	require.Zero(t, count(`SELECT count(*) FROM scheduler_runs WHERE attempt > 1 AND NOT failures @> '[{"status": "abandoned"}]'`),
		"a period ran again only after its runner died")

	survivor.p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, survivor.p.wait(t, 20*time.Second), "exit status after SIGTERM")
}

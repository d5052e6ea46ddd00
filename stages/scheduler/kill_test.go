package scheduler_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
)

// TestKillLeaderIntegration runs two replicas as processes and kills the
// leader with SIGKILL while it runs a slow job: the other replica leads
// within seconds, every later period runs once, and the killed period of
// the slow job is run again by the new leader (attempt 2), the dead attempt
// kept as abandoned.
func TestKillLeaderIntegration(t *testing.T) {
	db := testenv.Database(t)
	pool := newPool(t, db)
	migrate(t, pool)
	ctx := context.Background()
	_, err := pool.Exec(ctx, ticksDDL)
	require.NoError(t, err)
	sc := fastScheduler(map[string]config.SchedulerJob{
		"tick": {Schedule: "every 1s", Enabled: true},
		"slow": {Schedule: "every 1h", Enabled: true},
	})
	children := map[string]*exec.Cmd{}
	for _, name := range []string{"child-a", "child-b"} {
		children[name] = testenv.StartChild(t, childName, childConfig{DatabaseURL: db.URL.Reveal(), Runner: name, Scheduler: sc, SlowFor: 4 * time.Second})
	}
	// The leader runs the slow job's current period at once.
	waitFor(t, 20*time.Second, "the slow job to start", func() bool { return len(ticks(t, pool, "slow")) == 1 })
	waitFor(t, 20*time.Second, "2 ticks", func() bool { return len(ticks(t, pool, "tick")) >= 2 })
	leader := ticks(t, pool, "slow")[0].Runner
	survivor := "child-a"
	if leader == survivor {
		survivor = "child-b"
	}
	killed := time.Now()
	testenv.Kill9(t, children[leader])
	t.Logf("killed %s", leader)

	var firstBySurvivor time.Time
	waitFor(t, 10*time.Second, "the survivor to run a tick", func() bool {
		for _, r := range ticks(t, pool, "tick") {
			if r.Runner == survivor && r.At.After(killed) {
				firstBySurvivor = r.At
				return true
			}
		}
		return false
	})
	takeover := firstBySurvivor.Sub(killed)
	t.Logf("the survivor ran its first tick %s after the kill", takeover)
	require.Less(t, takeover, 3*time.Second, "taken over within seconds")

	// The slow period is taken over once its heartbeat is older than
	// heartbeat_timeout and runs to completion.
	var status, runner string
	var attempt int
	var failures []map[string]any
	waitFor(t, 20*time.Second, "the slow period to succeed", func() bool {
		var raw []byte
		require.NoError(t, pool.QueryRow(ctx, `SELECT status, runner, attempt, failures FROM scheduler_runs WHERE job = 'slow'`).
			Scan(&status, &runner, &attempt, &raw))
		require.NoError(t, json.Unmarshal(raw, &failures))
		return status == "succeeded"
	})
	require.Equal(t, survivor, runner)
	require.Equal(t, 2, attempt)
	require.Len(t, failures, 1)
	require.Equal(t, "abandoned", failures[0]["status"])
	require.Equal(t, leader, failures[0]["runner"])
	slow := ticks(t, pool, "slow")
	require.Len(t, slow, 2, "the slow period ran again, once")
	require.True(t, slow[0].ScheduledFor.Equal(slow[1].ScheduledFor))

	// Every tick period ran once, before and after the kill.
	n := len(ticks(t, pool, "tick"))
	waitFor(t, 10*time.Second, "3 more ticks", func() bool { return len(ticks(t, pool, "tick")) >= n+3 })
	rows := ticks(t, pool, "tick")
	gaps := requireOncePerPeriod(t, rows, time.Second)
	t.Logf("%d tick periods, %d skipped", len(rows), gaps)
	require.LessOrEqual(t, gaps, 3, "only the periods of the takeover may be skipped")
	var running int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM scheduler_runs WHERE job = 'tick' AND status = 'running'
		AND scheduled_for < now() - interval '5 seconds'`).Scan(&running))
	require.Zero(t, running, "no past period is left running")
}

package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// migrateSummary matches migrate's database line.
var migrateSummary = regexp.MustCompile(`(?m)^database: mode (\S+), (\d+) migration\(s\) applied now, (\d+) already applied$`)

// topicStates parses migrate's topic table: topic name -> state column.
func topicStates(t *testing.T, stdout string) map[string]string {
	t.Helper()
	out := map[string]string{}
	lines := strings.Split(stdout, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "TOPIC ") {
			continue
		}
		for _, row := range lines[i+1:] {
			f := strings.Fields(row)
			if len(f) < 4 {
				break
			}
			out[f[0]] = strings.Join(f[3:], " ")
		}
		return out
	}
	t.Fatalf("no topic table in:\n%s", stdout)
	return nil
}

// appliedVersions returns schema_migrations' versions with their row counts.
func appliedVersions(t *testing.T, db config.Database) map[int]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, db.URL.Reveal())
	require.NoError(t, err)
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT version, count(*)::int FROM schema_migrations GROUP BY version ORDER BY version`)
	require.NoError(t, err)
	type row struct{ Version, N int }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	require.NoError(t, err)
	out := map[int]int{}
	for _, r := range got {
		out[r.Version] = r.N
	}
	return out
}

// knownVersions returns what a fully migrated schema_migrations holds: each
// version of the binary's migrations once.
func knownVersions(t *testing.T) (map[int]int, []timescale.Migration) {
	t.Helper()
	migs, err := timescale.Migrations()
	require.NoError(t, err)
	want := map[int]int{}
	for _, m := range migs {
		want[m.Version] = 1
	}
	return want, migs
}

// TestMigrateIntegration runs migrate twice on a fresh schema and the test's
// topics, one of which does not exist yet: the first run applies every
// migration and creates that topic, the second has nothing left to do.
func TestMigrateIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	kafka := testenv.Kafka(t, 2)
	newTopic := strings.ReplaceAll(testenv.Name(t), "_", "-") + ".notifications"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := pipeline.DeleteTopics(ctx, kafka, []string{newTopic}); err != nil {
			t.Errorf("deleting topic %s: %v", newTopic, err)
		}
	})
	env := concat(dbEnv(db), kafkaEnv(kafka), []string{"STACKVPS_KAFKA_TOPICS_NOTIFICATIONS=" + newTopic})
	want, migs := knownVersions(t)
	existing := []string{kafka.Topics.Raw, kafka.Topics.RawDLQ, kafka.Topics.Readings, kafka.Topics.ReadingsDLQ, kafka.Topics.ComplianceRecords}

	code, stdout, stderr := runProc(t, time.Minute, env, "migrate")
	require.Equal(t, 0, code, "first run\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	m := migrateSummary.FindStringSubmatch(stdout)
	require.NotNil(t, m, "no database line in:\n%s", stdout)
	require.Equal(t, []string{fmt.Sprint(len(migs)), "0"}, m[2:4], "first run applies every migration:\n%s", stdout)
	require.Contains(t, stdout, "applied 0001_readings")
	for _, mig := range migs {
		require.Contains(t, stdout, fmt.Sprintf("  applied %04d_%s\n", mig.Version, mig.Name))
	}
	states := topicStates(t, stdout)
	require.Len(t, states, len(kafka.Topics.All()), stdout)
	for _, name := range existing {
		require.Equal(t, "exists", states[name], "topic %s", name)
	}
	require.Equal(t, "created", states[newTopic])
	require.Regexp(t, `(?m)^`+regexp.QuoteMeta(newTopic)+` +2 +`, stdout, "created with kafka.partitions partitions")
	require.Contains(t, stderr, `"msg":"migration applied"`)

	code, stdout, stderr = runProc(t, time.Minute, env, "migrate")
	require.Equal(t, 0, code, "second run\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	m = migrateSummary.FindStringSubmatch(stdout)
	require.NotNil(t, m, "no database line in:\n%s", stdout)
	require.Equal(t, []string{"0", fmt.Sprint(len(migs))}, m[2:4], "second run finds everything applied:\n%s", stdout)
	require.NotContains(t, stdout, "  applied ")
	states = topicStates(t, stdout)
	require.Len(t, states, len(kafka.Topics.All()), stdout)
	for _, name := range append(existing, newTopic) {
		// Right after creating a topic, Kafka's metadata may not list it
		// yet: migrate then finds it exists when creating it again and
		// says "exists: created concurrently by another process".
		require.True(t, strings.HasPrefix(states[name], "exists"), "topic %s: %q", name, states[name])
	}

	require.Equal(t, want, appliedVersions(t, db))
}

// TestMigrateConcurrentIntegration starts several migrate processes on one
// fresh schema at once: all succeed, exactly one applies each migration.
func TestMigrateConcurrentIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	want, migs := knownVersions(t)
	const n = 4
	// Starting a process takes a millisecond, connecting to the database
	// longer: all n race for the migration lock.
	procs := make([]*proc, n)
	for i := range procs {
		procs[i] = startProc(t, dbEnv(db), "migrate", "--skip-topics")
	}
	applied := 0
	for i, p := range procs {
		code := p.wait(t, time.Minute)
		require.Equal(t, 0, code, "process %d\nstdout:\n%s\nstderr:\n%s", i, p.stdout, p.stderr)
		m := migrateSummary.FindStringSubmatch(p.stdout.String())
		require.NotNil(t, m, "process %d printed no database line:\n%s", i, p.stdout)
		var now, already int
		_, err := fmt.Sscan(m[2], &now)
		require.NoError(t, err)
		_, err = fmt.Sscan(m[3], &already)
		require.NoError(t, err)
		require.Equal(t, len(migs), now+already, "process %d: every migration is applied now or already", i)
		applied += now
	}
	require.Equal(t, len(migs), applied, "each migration is applied by exactly one process")
	require.Equal(t, want, appliedVersions(t, db))
}

package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
)

// doctorChecks are the check names doctor reports, in its order.
var doctorChecks = []string{
	"config", "postgres", "postgres extensions", "migrations",
	"kafka", "kafka topics", "mqtt", "schema registry",
}

// doctorLine matches one check line of doctor's table. Names hold single
// spaces and the tabwriter pads with at least two.
var doctorLine = regexp.MustCompile(`^(` + strings.Join(doctorChecks, "|") + `) {2,}(ok|skip|warn|FAIL)(?: {2,}(.*))?$`)

// doctorResult is one parsed check line.
type doctorResult struct{ status, detail string }

// parseDoctor returns doctor's check lines by name, failing the test unless
// every check is reported exactly once.
func parseDoctor(t *testing.T, stdout string) map[string]doctorResult {
	t.Helper()
	out := map[string]doctorResult{}
	for _, l := range strings.Split(stdout, "\n") {
		m := doctorLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		_, dup := out[m[1]]
		require.False(t, dup, "check %q reported twice:\n%s", m[1], stdout)
		out[m[1]] = doctorResult{status: m[2], detail: m[3]}
	}
	for _, name := range doctorChecks {
		require.Contains(t, out, name, "doctor did not report %q:\n%s", name, stdout)
	}
	return out
}

// TestDoctorIntegration runs doctor against the real services, then with one
// dependency broken at a time: only that dependency's check fails (and the
// checks that need it are skipped), with a fix line.
func TestDoctorIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	fresh := testenv.Database(t) // never migrated
	kafka := testenv.Kafka(t, 1)
	mqtt := testenv.MQTT(t)
	healthy := concat(dbEnv(db), kafkaEnv(kafka), mqttEnv(mqtt))

	code, stdout, stderr := runProc(t, time.Minute, healthy, "migrate", "--skip-topics")
	require.Equal(t, 0, code, "migrate:\n%s\n%s", stdout, stderr)

	missingTopic := strings.ReplaceAll(testenv.Name(t), "_", "-") + ".absent"
	ok, skip, fail := "ok", "skip", "FAIL"
	cases := []struct {
		name string
		env  []string
		code int
		// want is the status of each check; checks not named must be ok,
		// except schema registry, which must be skip.
		want map[string]string
		// detail and fix must appear in the named check's detail and in
		// the stdout as "fix <check>: <fix>".
		detail, fix map[string]string
	}{
		{name: "healthy", env: healthy, code: 0},
		{
			name: "postgres down",
			env:  concat(healthy, []string{"DATABASE_URL=postgres://stackvps@" + deadAddr(t) + "/stackvps?sslmode=disable"}),
			code: 1,
			want: map[string]string{"postgres": fail, "postgres extensions": skip, "migrations": skip},
			fix:  map[string]string{"postgres": "start PostgreSQL"},
		},
		{
			name: "kafka down",
			env:  concat(healthy, []string{"KAFKA_BROKERS=" + deadAddr(t)}),
			code: 1,
			want: map[string]string{"kafka": fail, "kafka topics": skip},
			fix:  map[string]string{"kafka": "start Kafka or Redpanda"},
		},
		{
			name: "mqtt down",
			env:  concat(healthy, []string{"STACKVPS_MQTT_BROKER=mqtt://" + deadAddr(t)}),
			code: 1,
			want: map[string]string{"mqtt": fail},
			fix:  map[string]string{"mqtt": "start the MQTT broker"},
		},
		{
			name: "schema registry down",
			env:  concat(healthy, []string{"SCHEMA_REGISTRY_URL=http://" + deadAddr(t)}),
			code: 1,
			want: map[string]string{"schema registry": fail},
			fix:  map[string]string{"schema registry": "start the schema registry or unset SCHEMA_REGISTRY_URL"},
		},
		{
			name:   "migrations pending",
			env:    concat(healthy, dbEnv(fresh)),
			code:   1,
			want:   map[string]string{"migrations": fail},
			detail: map[string]string{"migrations": "pending 0001_readings"},
			fix:    map[string]string{"migrations": "run stackvps migrate"},
		},
		{
			name:   "topic missing",
			env:    concat(healthy, []string{"STACKVPS_KAFKA_TOPICS_READINGS_DLQ=" + missingTopic}),
			code:   1,
			want:   map[string]string{"kafka topics": fail},
			detail: map[string]string{"kafka topics": "missing " + missingTopic},
			fix:    map[string]string{"kafka topics": "run stackvps migrate"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			code, stdout, stderr := runProc(t, 30*time.Second, c.env, "doctor", "--timeout", "3s")
			t.Logf("doctor took %s", time.Since(start).Round(time.Millisecond))
			require.Equal(t, c.code, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			got := parseDoctor(t, stdout)
			for _, name := range doctorChecks {
				want, named := c.want[name]
				if !named {
					want = ok
					if name == "schema registry" {
						want = skip
					}
				}
				require.Equal(t, want, got[name].status, "check %q (detail %q) in:\n%s", name, got[name].detail, stdout)
			}
			for name, d := range c.detail {
				require.Contains(t, got[name].detail, d, "detail of %q", name)
			}
			for name, f := range c.fix {
				require.Contains(t, stdout, "\nfix "+name+": "+f)
			}
			if c.code == 0 {
				require.NotContains(t, stdout, "\nfix ")
			}
		})
	}
}

// TestDoctorInvalidConfig needs no service: an invalid configuration is
// reported, one config FAIL line per problem, before anything is contacted.
func TestDoctorInvalidConfig(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runInProcess(t, []string{"STACKVPS_KAFKA_PARTITIONS=0", "STACKVPS_NOPE=1", "KAFKA_BROKERS=nohost"},
		"doctor", "--timeout", "3s")
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Regexp(t, `(?m)^config +FAIL +kafka\.partitions: must be at least 1`, stdout)
	require.Regexp(t, `(?m)^config +FAIL +kafka\.brokers\[0\]: must be host:port`, stdout)
	require.Regexp(t, `(?m)^config +FAIL +STACKVPS_NOPE: is not a configuration variable`, stdout)
	require.Contains(t, stdout, "fix: correct the keys above")
	for _, name := range doctorChecks[1:] {
		require.NotRegexp(t, `(?m)^`+name+`  `, stdout, "no dependency is checked with an invalid configuration")
	}
}

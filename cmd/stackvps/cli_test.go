package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
)

// configTestdata is the config package's testdata, from this package.
const configTestdata = "../../config/testdata"

// cliCase is one in-process command line and what it must produce.
type cliCase struct {
	name    string
	args    []string
	environ []string
	code    int
	// stdout and stderr must contain each of these.
	stdout, stderr []string
	// never must appear in neither stdout nor stderr.
	never []string
}

func (c cliCase) check(t *testing.T) {
	t.Helper()
	code, stdout, stderr := runInProcess(t, c.environ, c.args...)
	require.Equal(t, c.code, code, "exit status of stackvps %s\nstdout:\n%s\nstderr:\n%s", strings.Join(c.args, " "), stdout, stderr)
	for _, s := range c.stdout {
		require.Contains(t, stdout, s, "stdout")
	}
	for _, s := range c.stderr {
		require.Contains(t, stderr, s, "stderr")
	}
	for _, s := range c.never {
		require.NotContains(t, stdout, s, "stdout")
		require.NotContains(t, stderr, s, "stderr")
	}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	var commandNames []string
	for _, c := range commands() {
		commandNames = append(commandNames, "  "+c.name+" ")
	}
	cases := []cliCase{
		{name: "no command", args: nil, code: 2, stderr: []string{"no command given", "Usage: stackvps"}},
		{name: "only global flags", args: []string{"--config", "x.yaml"}, code: 2, stderr: []string{"no command given"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`}},
		{name: "unknown global flag", args: []string{"--nope", "help"}, code: 2, stderr: []string{"-nope"}},
		{name: "help", args: []string{"help"}, code: 0, stdout: append([]string{"Usage: stackvps", "Commands:"}, commandNames...)},
		{name: "--help", args: []string{"--help"}, code: 0, stderr: []string{"Usage: stackvps"}},
		{name: "command --help", args: []string{"run", "--help"}, code: 0, stderr: []string{"Usage: stackvps [--config FILE] run", "-stages"}},
		{name: "unknown stage", args: []string{"run", "--stages", "nope"}, code: 2,
			stderr: append([]string{`unknown stage "nope"`}, stageNames()...)},
		{name: "stage twice", args: []string{"run", "--stages", "bridge,bridge"}, code: 2, stderr: []string{`stage "bridge" given twice`}},
		{name: "run argument", args: []string{"run", "bridge"}, code: 2, stderr: []string{`unexpected argument "bridge"`}},
		{name: "unknown command flag", args: []string{"migrate", "--nope"}, code: 2, stderr: []string{"-nope"}},
		{name: "doctor bad timeout", args: []string{"doctor", "--timeout", "soon"}, code: 2, stderr: []string{"-timeout"}},
		{name: "doctor argument", args: []string{"doctor", "now"}, code: 2, stderr: []string{`doctor: unexpected argument "now"`}},
		{name: "migrate nothing to do", args: []string{"migrate", "--skip-db", "--skip-topics"}, code: 2, stderr: []string{"leave nothing to do"}},
		{name: "simulate rate 0 without count", args: []string{"simulate", "--rate", "0"}, code: 2, stderr: []string{"needs a count"}},
		{name: "simulate bad qos", args: []string{"simulate", "--qos", "2", "--count", "1"}, code: 2, stderr: []string{"--qos must be 0 or 1"}},
		{name: "simulate bad start", args: []string{"simulate", "--start", "yesterday", "--count", "1"}, code: 2, stderr: []string{"--start"}},
		{name: "config without subcommand", args: []string{"config"}, code: 2, stderr: []string{"want exactly one of validate, show, keys"}},
		{name: "config unknown subcommand", args: []string{"config", "edit"}, code: 2, stderr: []string{`unknown subcommand "edit"`}},
		{name: "config validate defaults", args: []string{"config", "validate"}, code: 0,
			stdout: []string{"configuration OK (defaults and environment)"}},
		{name: "config validate unknown variable", args: []string{"config", "validate"},
			environ: []string{"STACKVPS_KAFKA_BROKERZ=x"}, code: 1, stdout: []string{"STACKVPS_KAFKA_BROKERZ: is not a configuration variable"}},
		{name: "config validate reserved variables", args: []string{"config", "validate"},
			environ: []string{"STACKVPS_TEST_ANYTHING=x", "STACKVPS_CONFIG="}, code: 0, stdout: []string{"configuration OK"}},
		{name: "config validate bad variable value", args: []string{"config", "validate"},
			environ: []string{"STACKVPS_KAFKA_PARTITIONS=many", "MQTT_PORT=0"}, code: 1,
			stdout: []string{"kafka.partitions: from STACKVPS_KAFKA_PARTITIONS:", "mqtt.port: must be 1-65535; got 0"}},
		{name: "config validate missing file", args: []string{"--config", "missing.yaml", "config", "validate"}, code: 1,
			stdout: []string{"missing.yaml", "no such file or directory"}},
		{name: "config show redacts", args: []string{"config", "show"},
			environ: []string{"MQTT_USERNAME=u", "MQTT_PASSWORD=topsecret", "DATABASE_URL=postgres://u:hunter2@h/db"}, code: 0,
			stdout: []string{"@h/db", "username: u"}, never: []string{"topsecret", "hunter2"}},
		{name: "config show redacts a password parameter", args: []string{"config", "show"},
			environ: []string{"DATABASE_URL=postgres://u@h/db?password=hunter2"}, code: 0,
			stdout: []string{"@h/db"}, never: []string{"hunter2"}},
		{name: "config show redacts a keyword string", args: []string{"config", "show"},
			environ: []string{"DATABASE_URL=host=h password=hunter2"}, code: 0, never: []string{"hunter2"}},
		{name: "config show of an invalid url", args: []string{"config", "show"},
			environ: []string{"DATABASE_URL=postgres://u:hunter2@h:notaport/db"}, code: 1,
			stderr: []string{"database.url: invalid"}, never: []string{"hunter2"}},
		{name: "config show redacts the file's secrets", args: []string{"--config", configTestdata + "/full.good.yaml", "config", "show"},
			code: 0, stdout: []string{"db.example", "username: bridge"}, never: []string{"hunter2", "s3cret", "p4ss"}},
		{name: "config validate redacts", args: []string{"--config", configTestdata + "/full.good.yaml", "config", "validate"},
			code: 0, stdout: []string{"configuration OK", "db.example"}, never: []string{"hunter2", "s3cret", "p4ss"}},
		{name: "config keys", args: []string{"config", "keys"}, code: 0, stdout: []string{"KEY", "ENVIRONMENT", "ALIAS"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t)
		})
	}
}

// TestConfigValidateFiles runs `config validate` on every file of the config
// package's testdata: *.good.yaml pass, *.bad.yaml fail listing every problem
// the loader finds, one per line, each starting with its key.
func TestConfigValidateFiles(t *testing.T) {
	t.Parallel()
	good, err := filepath.Glob(configTestdata + "/*.good.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, good)
	for _, file := range good {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runInProcess(t, nil, "--config", file, "config", "validate")
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			require.Contains(t, stdout, "configuration OK ("+file+")")
		})
	}

	// Keys each bad file must report, independent of what the loader does.
	wantKeys := map[string][]string{
		"bad-values.bad.yaml": {
			"log.level", "http.listen", "database.max_conns", "kafka.brokers[0]", "kafka.partitions",
			"kafka.replication_factor", "kafka.retention", "kafka.topics.raw", "kafka.topics.readings",
			"mqtt.port", "mqtt.password", "mqtt.session_expiry", "pipeline.retry_max",
			"bridge.subscriptions[0]", "bridge.subscriptions[1]", "bridge.topic_pattern", "bridge.receive_maximum",
		},
		"duplicate-key.bad.yaml": {"mqtt.broker"},
		"not-yaml.bad.yaml":      {"(file)"},
		"unknown-keys.bad.yaml":  {"kafka.brokerz", "kafka.topics.rawz", "mqt"},
		"wrong-types.bad.yaml":   {"database.max_conns", "kafka", "mqtt.port", "mqtt.keep_alive"},
	}
	keyLine := regexp.MustCompile(`^(\(file\)|[a-z_]+(\.[a-z_]+)*(\[\d+\])?): \S`)
	bad, err := filepath.Glob(configTestdata + "/*.bad.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, bad)
	for _, file := range bad {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			_, loadErr := config.Load(file, nil)
			require.Error(t, loadErr)
			var want []string
			for _, p := range config.Problems(loadErr) {
				want = append(want, p.Error())
			}

			code, stdout, stderr := runInProcess(t, nil, "--config", file, "config", "validate")
			require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			require.ElementsMatch(t, want, lines, "stdout must list every problem, one per line, and nothing else")
			for _, l := range lines {
				require.Regexp(t, keyLine, l, "every line starts with the key it concerns")
			}
			for _, k := range wantKeys[filepath.Base(file)] {
				require.True(t, hasLinePrefix(lines, k+": "), "no problem reported for %s in:\n%s", k, stdout)
			}
			if filepath.Base(file) == "bad-values.bad.yaml" {
				require.GreaterOrEqual(t, len(lines), 15)
			}
		})
	}
}

func hasLinePrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func TestConfigFileFromEnvironment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	goodFile := filepath.Join(dir, "good.yaml")
	require.NoError(t, os.WriteFile(goodFile, []byte("kafka:\n  brokers: [k9.example:9092]\n"), 0o600))
	badFile := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(badFile, []byte("kafka:\n  partitions: 0\n"), 0o600))

	cases := []cliCase{
		{name: "good file", args: []string{"config", "validate"}, environ: []string{"STACKVPS_CONFIG=" + goodFile},
			code: 0, stdout: []string{"configuration OK (" + goodFile + ")", "k9.example:9092"}},
		{name: "bad file", args: []string{"config", "validate"}, environ: []string{"STACKVPS_CONFIG=" + badFile},
			code: 1, stdout: []string{"kafka.partitions: must be at least 1; got 0"}},
		{name: "show", args: []string{"config", "show"}, environ: []string{"STACKVPS_CONFIG=" + goodFile},
			code: 0, stdout: []string{"- k9.example:9092"}},
		{name: "flag wins", args: []string{"--config", goodFile, "config", "validate"}, environ: []string{"STACKVPS_CONFIG=" + badFile},
			code: 0, stdout: []string{"configuration OK (" + goodFile + ")"}},
		{name: "environment wins over file", args: []string{"config", "validate"},
			environ: []string{"STACKVPS_CONFIG=" + badFile, "STACKVPS_KAFKA_PARTITIONS=3"}, code: 0, stdout: []string{"configuration OK"}},
		{name: "missing file", args: []string{"config", "validate"}, environ: []string{"STACKVPS_CONFIG=" + filepath.Join(dir, "nope.yaml")},
			code: 1, stdout: []string{"nope.yaml", "no such file or directory"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t)
		})
	}
}

func TestConfigKeys(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runInProcess(t, nil, "config", "keys")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, len(config.Keys())+1, "a header and one line per key")
	require.Regexp(t, `(?m)^kafka\.brokers +STACKVPS_KAFKA_BROKERS +KAFKA_BROKERS$`, stdout)
	for alias, path := range config.Aliases {
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(path)+` +`+regexp.QuoteMeta(config.EnvName(path))+` +`+alias+`$`, stdout)
	}
	for path, env := range config.Keys() {
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(path)+` +`+regexp.QuoteMeta(env)+`\b`, stdout)
	}
}

// TestCheckArgs pins checkArgs, which compose_test.go relies on: it accepts
// what run would run and rejects, without running anything, what run would
// refuse with status 2.
func TestCheckArgs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		ok   bool
	}{
		{"run all", []string{"run"}, true},
		{"run bridge", []string{"run", "--stages", "bridge"}, true},
		{"run all stages", []string{"run", "--stages", "all"}, true},
		{"migrate", []string{"--config", "/etc/stackvps.yaml", "migrate", "--skip-topics"}, true},
		{"doctor", []string{"doctor", "--timeout", "3s"}, true},
		{"simulate", []string{"simulate", "--devices", "3", "--rate", "0", "--count", "5"}, true},
		{"config", []string{"config", "validate"}, true},
		{"nothing", nil, false},
		{"unknown command", []string{"serve"}, false},
		{"unknown stage", []string{"run", "--stages", "nope"}, false},
		{"stage twice", []string{"run", "--stages", "bridge,bridge"}, false},
		{"unknown flag", []string{"doctor", "--fix"}, false},
		{"config subcommand", []string{"config", "dump"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := checkArgs(c.args)
			if c.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

// TestConfigShowRoundTrip checks that `config show` prints a file `config
// validate` accepts and that showing it again prints the same: operators
// start their stackvps.yaml from it.
func TestConfigShowRoundTrip(t *testing.T) {
	t.Parallel()
	good, err := filepath.Glob(configTestdata + "/*.good.yaml")
	require.NoError(t, err)
	for _, file := range append([]string{""}, good...) {
		name := filepath.Base(file)
		if file == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var args []string
			if file != "" {
				args = []string{"--config", file}
			}
			code, shown, stderr := runInProcess(t, nil, append(args, "config", "show")...)
			require.Equal(t, 0, code, stderr)
			out := filepath.Join(t.TempDir(), "shown.yaml")
			require.NoError(t, os.WriteFile(out, []byte(shown), 0o600))

			code, stdout, stderr := runInProcess(t, nil, "--config", out, "config", "validate")
			require.Equal(t, 0, code, "the output of config show does not load:\n%s%s\n%s", stdout, stderr, shown)
			code, again, stderr := runInProcess(t, nil, "--config", out, "config", "show")
			require.Equal(t, 0, code, stderr)
			require.Equal(t, shown, again)
		})
	}
}

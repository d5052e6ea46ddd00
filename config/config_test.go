package config_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/config"
)

func TestDefaultIsValid(t *testing.T) {
	cfg := config.Default()
	require.NoError(t, cfg.Validate())
}

func TestGoodFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := config.Load(f, nil)
			require.NoError(t, err)
		})
	}
}

func TestFullFile(t *testing.T) {
	cfg, err := config.Load("testdata/full.good.yaml", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"k1:9092", "k2:9092"}, cfg.Kafka.Brokers)
	require.Equal(t, 3, cfg.Kafka.ReplicationFactor)
	require.Equal(t, 90*24*time.Hour, cfg.Kafka.Retention.Std())
	require.Equal(t, "p4ss", cfg.MQTT.Password.Reveal())
	require.Equal(t, "bridges", cfg.Bridge.ShareGroup)
	u, err := cfg.MQTT.URL()
	require.NoError(t, err)
	require.Equal(t, "mqtts://mqtt.example:8883", u.String())
}

func TestBadFiles(t *testing.T) {
	cases := []struct {
		file string
		// want lists substrings that must each appear in some problem.
		want []string
	}{
		{"unknown-keys.bad.yaml", []string{
			`kafka.brokerz: unknown key (line 2); did you mean "brokers"?`,
			"kafka.topics.rawz: unknown key (line 4)",
			"mqt: unknown key (line 5)",
		}},
		{"bad-values.bad.yaml", []string{
			"log.level: must be one of",
			"http.listen: must be host:port",
			"database.max_conns: must be at least 1",
			"kafka.brokers[0]: must be host:port",
			"kafka.partitions: must be at least 1",
			"kafka.replication_factor: must be -1",
			`kafka.retention: must be a duration such as "30s" or "1h"; got "forever"`,
			`kafka.topics.raw: "bad topic!" has ' '`,
			`kafka.topics.readings: topic "telemetry.readings" is already used by kafka.topics.raw_dlq`,
			"mqtt.port: must be 1-65535",
			"mqtt.password: is set but mqtt.username is empty",
			"mqtt.session_expiry: must be positive",
			"pipeline.retry_max: must be at least pipeline.retry_initial",
			"bridge.subscriptions[0]: \"a/#/b\": '#' must be the last level",
			"bridge.subscriptions[1]: \"$share/g/x\": give the plain filter",
			"bridge.topic_pattern: \"telemetry/+\" must capture {device}",
			"bridge.receive_maximum: must be 1-65535",
		}},
		{"wrong-types.bad.yaml", []string{
			"database.max_conns: cannot unmarshal !!str `many` into int (line 2)",
			"kafka: must be a mapping (line 3)",
			"mqtt.port: cannot unmarshal !!str `eighteen` into int",
			"mqtt.keep_alive: must be a duration",
		}},
		{"not-yaml.bad.yaml", []string{"(file): is not valid YAML"}},
		{"duplicate-key.bad.yaml", []string{"mqtt.broker: is given twice (line 3)"}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			_, err := config.Load(filepath.Join("testdata", tc.file), nil)
			require.Error(t, err)
			var msgs []string
			for _, p := range config.Problems(err) {
				msgs = append(msgs, p.Error())
			}
			all := strings.Join(msgs, "\n")
			for _, w := range tc.want {
				require.Contains(t, all, w)
			}
			if tc.file == "bad-values.bad.yaml" {
				// Every problem is reported, not just the first.
				require.GreaterOrEqual(t, len(msgs), len(tc.want))
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	cases := []struct {
		name  string
		env   []string
		check func(t *testing.T, c *config.Config)
	}{
		{
			name: "old system variables",
			env: []string{
				"DATABASE_URL=postgres://u:pw@db:5432/x",
				"MQTT_BROKER=broker.local", "MQTT_PORT=1884",
				"MQTT_USERNAME=dev", "MQTT_PASSWORD=pw",
				"KAFKA_BROKERS=a:9092, b:9092",
				"SCHEMA_REGISTRY_URL=http://reg:8081",
			},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, "postgres://u:pw@db:5432/x", c.Database.URL.Reveal())
				u, err := c.MQTT.URL()
				require.NoError(t, err)
				require.Equal(t, "mqtt://broker.local:1884", u.String())
				require.Equal(t, "dev", c.MQTT.Username)
				require.Equal(t, []string{"a:9092", "b:9092"}, c.Kafka.Brokers)
				require.Equal(t, "http://reg:8081", c.SchemaRegistry.URL)
			},
		},
		{
			name: "STACKVPS_ wins over the alias",
			env:  []string{"KAFKA_BROKERS=a:9092", "STACKVPS_KAFKA_BROKERS=z:9092"},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, []string{"z:9092"}, c.Kafka.Brokers)
			},
		},
		{
			name: "nested keys and durations",
			env: []string{
				"STACKVPS_KAFKA_TOPICS_RAW=custom.raw",
				"STACKVPS_PIPELINE_SHUTDOWN_TIMEOUT=5s",
				"STACKVPS_BRIDGE_SHARE_GROUP=",
				"STACKVPS_TEST_DATABASE_URL=ignored",
				"STACKVPS_CONFIG=ignored",
			},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, "custom.raw", c.Kafka.Topics.Raw)
				require.Equal(t, 5*time.Second, c.Pipeline.ShutdownTimeout.Std())
				require.Empty(t, c.Bridge.ShareGroup)
			},
		},
		{
			name: "a MQTT URL keeps its own port",
			env:  []string{"MQTT_BROKER=tcp://10.0.0.1:1999", "MQTT_PORT=1"},
			check: func(t *testing.T, c *config.Config) {
				u, err := c.MQTT.URL()
				require.NoError(t, err)
				require.Equal(t, "tcp://10.0.0.1:1999", u.String())
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Load("testdata/empty.good.yaml", tc.env)
			require.NoError(t, err)
			tc.check(t, cfg)
		})
	}
}

func TestEnvErrors(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"unknown STACKVPS_ variable", []string{"STACKVPS_KAFKA_BROKER=x:1"}, "STACKVPS_KAFKA_BROKER: is not a configuration variable"},
		{"bad int", []string{"MQTT_PORT=abc"}, "mqtt.port: from MQTT_PORT: cannot unmarshal"},
		{"bad duration", []string{"STACKVPS_HTTP_READ_TIMEOUT=soon"}, "http.read_timeout: from STACKVPS_HTTP_READ_TIMEOUT: must be a duration"},
		{"validation after env", []string{"KAFKA_BROKERS=nohost"}, "kafka.brokers[0]: must be host:port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load("testdata/empty.good.yaml", tc.env)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestEveryKeyHasAnEnvVariable(t *testing.T) {
	keys := config.Keys()
	require.Equal(t, "STACKVPS_KAFKA_BROKERS", keys["kafka.brokers"])
	require.Equal(t, "STACKVPS_SCHEMA_REGISTRY_URL", keys["schema_registry.url"])
	for path, env := range keys {
		if path == "kafka.brokers" || path == "bridge.subscriptions" {
			continue // lists take comma-separated values, checked above
		}
		// Every scalar key can be set; a wrong value names the key.
		_, err := config.Load("", []string{env + "=\x00not-valid-anything"})
		if err != nil {
			require.Contains(t, err.Error(), path, "error for %s should name the key", env)
		}
	}
	for alias, path := range config.Aliases {
		require.Contains(t, keys, path, "alias %s points at a missing key", alias)
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	cfg, err := config.Load("testdata/full.good.yaml", []string{"MQTT_PASSWORD=topsecret"})
	require.NoError(t, err)
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "mqtt", cfg.MQTT, "pw", cfg.MQTT.Password, "db", cfg.Database)
	for _, s := range []string{string(out), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.MQTT.Password), logs.String()} {
		require.NotContains(t, s, "topsecret")
		require.NotContains(t, s, "hunter2")
		require.NotContains(t, s, "s3cret")
	}
	require.Equal(t, "postgres://stackvps:xxxxx@db.example:5432/stackvps?sslmode=require", config.RedactURL(cfg.Database.URL.Reveal()))
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestExampleFileHasEveryKeyAtItsDefault(t *testing.T) {
	cfg, err := config.Load("../stackvps.example.yaml", nil)
	require.NoError(t, err)
	require.Equal(t, config.Default(), *cfg, "stackvps.example.yaml must show every default")
	raw, err := os.ReadFile("../stackvps.example.yaml")
	require.NoError(t, err)
	var tree map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &tree))
	for path := range config.Keys() {
		var node any = tree
		for _, part := range strings.Split(path, ".") {
			m, ok := node.(map[string]any)
			require.True(t, ok, "stackvps.example.yaml lacks %s", path)
			node, ok = m[part]
			require.True(t, ok, "stackvps.example.yaml lacks %s", path)
		}
	}
}

func TestMapsMergeOverDefaults(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(f, []byte("normalize:\n  ranges:\n    flow: {min: 0, max: 50}\n  spike:\n    pressure: 100\n"), 0o600))
	cfg, err := config.Load(f, nil)
	require.NoError(t, err)
	require.Equal(t, config.Range{Min: 0, Max: 50}, cfg.Normalize.Ranges["flow"])
	require.Equal(t, config.Range{Min: -10, Max: 3000}, cfg.Normalize.Ranges["level"], "defaults not given stay")
	require.Equal(t, 100.0, cfg.Normalize.Spike["pressure"])
	require.Equal(t, 500.0, cfg.Normalize.Spike["flow"])

	_, err = config.Load("", []string{"STACKVPS_NORMALIZE_RANGES=x"})
	require.ErrorContains(t, err, "normalize.ranges: cannot be set from the environment")
	require.NoError(t, os.WriteFile(f, []byte("normalize:\n  ranges:\n    flow: {min: 9, max: 1}\n  stale_after: {level: 1}\nsink: {batch_size: 0}\n"), 0o600))
	_, err = config.Load(f, nil)
	require.ErrorContains(t, err, "normalize.ranges.flow: min 9 is above max 1")
	require.ErrorContains(t, err, "normalize.stale_after.level: must be at least 2")
	require.ErrorContains(t, err, "sink.batch_size: must be at least 1")
}

func TestAggregateSkewCoversNormalize(t *testing.T) {
	_, err := config.Load("", []string{"STACKVPS_AGGREGATE_CLOCK_SKEW=5m", "STACKVPS_NORMALIZE_MAX_FUTURE_SKEW=10m"})
	require.ErrorContains(t, err, "aggregate.clock_skew: must be at least normalize.max_future_skew (10m0s)")
}

// Package testenv gives integration tests the real services: PostgreSQL,
// Kafka and MQTT, named by STACKVPS_TEST_DATABASE_URL,
// STACKVPS_TEST_KAFKA_BROKERS and STACKVPS_TEST_MQTT_URL. A test whose
// service is not configured is skipped, unless STACKVPS_TEST_REQUIRE=1 (set by
// `make test`), which turns the skip into a failure so CI never passes by
// skipping. Each test gets its own schema and topics, dropped at cleanup.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
)

// Environment variables naming the services.
const (
	EnvDatabaseURL  = "STACKVPS_TEST_DATABASE_URL"
	EnvKafkaBrokers = "STACKVPS_TEST_KAFKA_BROKERS"
	EnvMQTTURL      = "STACKVPS_TEST_MQTT_URL"
	EnvRequire      = "STACKVPS_TEST_REQUIRE"
)

// lookup returns the variable's value, or skips (fails under
// STACKVPS_TEST_REQUIRE=1) when it is unset.
func lookup(tb testing.TB, name string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv(EnvRequire) == "1" {
		tb.Fatalf("%s is not set and %s=1: start the services with `make services` and source .local/env", name, EnvRequire)
	}
	tb.Skipf("set %s to run (make services; . .local/env)", name)
	return ""
}

// Name returns a short identifier unique to this test run, derived from the
// test's name: lowercase letters, digits and '_', at most 48 bytes.
func Name(tb testing.TB) string {
	tb.Helper()
	base := strings.ToLower(nonWord.ReplaceAllString(tb.Name(), "_"))
	if len(base) > 38 {
		base = base[:38]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t_" + strings.Trim(base, "_") + "_" + hex.EncodeToString(b[:])
}

var nonWord = regexp.MustCompile(`[^A-Za-z0-9]+`)

// Database returns a database section whose URL selects a fresh schema of
// the test database (search_path=<schema>,public), created now and dropped
// with everything in it at cleanup. Processes started by the test can use the
// same URL.
func Database(tb testing.TB) config.Database {
	tb.Helper()
	raw := lookup(tb, EnvDatabaseURL)
	schema := Name(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgxpool.New(ctx, raw)
	require.NoError(tb, err)
	defer admin.Close()
	_, err = admin.Exec(ctx, `CREATE SCHEMA `+schema)
	require.NoError(tb, err, "creating test schema")
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgxpool.New(ctx, raw)
		if err != nil {
			tb.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			tb.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(raw)
	require.NoError(tb, err, "%s must be a URL", EnvDatabaseURL)
	q := u.Query()
	q.Set("search_path", schema+",public")
	u.RawQuery = q.Encode()
	cfg := config.Default().Database
	cfg.URL = config.SecretURL(u.String())
	return cfg
}

// Postgres returns a pool on a fresh schema (see Database), closed at cleanup.
func Postgres(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	cfg := Database(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cfg.URL.Reveal())
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	return pool
}

// RequireTimescale skips the test, saying so, unless the timescaledb
// extension is available in the test database. Timescale-only behaviour is
// tested when it is; the plain-PostgreSQL path is always tested.
func RequireTimescale(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	var ok bool
	err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
		AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'`).Scan(&ok)
	require.NoError(tb, err)
	if !ok {
		tb.Skip("timescaledb extension not installed")
	}
}

// Kafka returns a kafka section pointing at the test brokers whose contract
// topics carry a prefix unique to this test; the topics are created with the
// given partitions now and deleted at cleanup.
func Kafka(tb testing.TB, partitions int) config.Kafka {
	tb.Helper()
	brokers := lookup(tb, EnvKafkaBrokers)
	cfg := config.Default().Kafka
	cfg.Brokers = strings.Split(brokers, ",")
	cfg.ClientID = Name(tb)
	cfg.Partitions = partitions
	cfg.DialTimeout = config.Duration(5 * time.Second)
	p := strings.ReplaceAll(cfg.ClientID, "_", "-") + "."
	t := &cfg.Topics
	t.Raw, t.RawDLQ, t.Readings = p+t.Raw, p+t.RawDLQ, p+t.Readings
	t.ReadingsDLQ, t.ComplianceRecords, t.Notifications = p+t.ReadingsDLQ, p+t.ComplianceRecords, p+t.Notifications
	t.ComplianceRecordsDLQ, t.NotificationsDLQ = p+t.ComplianceRecordsDLQ, p+t.NotificationsDLQ
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := pipeline.EnsureTopics(ctx, cfg, pipeline.ContractTopics(cfg))
	require.NoError(tb, err, "creating test topics")
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := pipeline.DeleteTopics(ctx, cfg, cfg.Topics.All()); err != nil {
			tb.Errorf("deleting test topics: %v", err)
		}
	})
	return cfg
}

// MQTT returns an mqtt section pointing at the test broker, with a client id
// unique to the test.
func MQTT(tb testing.TB) config.MQTT {
	tb.Helper()
	raw := lookup(tb, EnvMQTTURL)
	cfg := config.Default().MQTT
	cfg.Broker = raw
	cfg.ClientID = Name(tb)
	cfg.SessionExpiry = config.Duration(5 * time.Minute)
	_, err := cfg.URL()
	require.NoError(tb, err, "%s", EnvMQTTURL)
	return cfg
}

// Context returns a context cancelled at cleanup or after d.
func Context(tb testing.TB, d time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// KafkaEnv is the environment that points a stackvps process at k: the
// brokers, the client id and every contract topic.
func KafkaEnv(k config.Kafka) []string {
	t := k.Topics
	return []string{
		"KAFKA_BROKERS=" + strings.Join(k.Brokers, ","),
		"STACKVPS_KAFKA_CLIENT_ID=" + k.ClientID,
		"STACKVPS_KAFKA_TOPICS_RAW=" + t.Raw,
		"STACKVPS_KAFKA_TOPICS_RAW_DLQ=" + t.RawDLQ,
		"STACKVPS_KAFKA_TOPICS_READINGS=" + t.Readings,
		"STACKVPS_KAFKA_TOPICS_READINGS_DLQ=" + t.ReadingsDLQ,
		"STACKVPS_KAFKA_TOPICS_COMPLIANCE_RECORDS=" + t.ComplianceRecords,
		"STACKVPS_KAFKA_TOPICS_COMPLIANCE_RECORDS_DLQ=" + t.ComplianceRecordsDLQ,
		"STACKVPS_KAFKA_TOPICS_NOTIFICATIONS=" + t.Notifications,
		"STACKVPS_KAFKA_TOPICS_NOTIFICATIONS_DLQ=" + t.NotificationsDLQ,
	}
}

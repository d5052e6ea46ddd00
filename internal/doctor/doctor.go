// Package doctor checks an installation: the configuration and every
// dependency (PostgreSQL and its extensions, migrations, Kafka and the
// contract topics, the MQTT broker, the schema registry), each with a
// concrete fix when it fails. It replaces the old system's verification
// scripts.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/mqttclient"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// Status is a check's outcome.
type Status string

// Statuses, from best to worst.
const (
	OK   Status = "ok"
	Skip Status = "skip"
	Warn Status = "warn"
	Fail Status = "FAIL"
)

// Result is one line of the report.
type Result struct {
	Name   string
	Status Status
	Detail string
	// Fix says what to do when Status is Warn or Fail.
	Fix string
}

// Run checks everything cfg names, each check bounded by timeout, and returns
// the results in a fixed order. Checks of independent dependencies run
// concurrently; a check that needs another (migrations need PostgreSQL) is
// skipped, saying why, when that one failed.
func Run(ctx context.Context, cfg *config.Config, timeout time.Duration) []Result {
	var (
		wg                        sync.WaitGroup
		pg, ext, migs             Result
		kafka, topics, mqtt, sreg Result
	)
	wg.Go(func() { pg, ext, migs = checkPostgres(ctx, cfg, timeout) })
	wg.Go(func() { kafka, topics = checkKafka(ctx, cfg, timeout) })
	wg.Go(func() { mqtt = checkMQTT(ctx, cfg, timeout) })
	wg.Go(func() { sreg = checkRegistry(ctx, cfg, timeout) })
	wg.Wait()
	results := []Result{
		{Name: "config", Status: OK, Detail: "valid"},
		pg, ext, migs, kafka, topics, mqtt, sreg,
	}
	for i := range results {
		// One line per check: drivers list each connection attempt on its
		// own line.
		results[i].Detail = strings.Join(strings.Fields(results[i].Detail), " ")
	}
	return results
}

// Failed reports whether any result failed.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

func checkPostgres(ctx context.Context, cfg *config.Config, timeout time.Duration) (pg, ext, migs Result) {
	pg = Result{Name: "postgres"}
	ext = Result{Name: "postgres extensions"}
	migs = Result{Name: "migrations"}
	where := config.RedactURL(cfg.Database.URL.Reveal())
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dbcfg := cfg.Database
	dbcfg.ConnectTimeout = config.Duration(min(timeout, dbcfg.ConnectTimeout.Std()))
	pool, err := timescale.Connect(ctx, dbcfg)
	if err != nil {
		pg.Status, pg.Detail = Fail, err.Error()
		pg.Fix = fmt.Sprintf("start PostgreSQL (make services) or set DATABASE_URL; tried %s", where)
		if strings.Contains(err.Error(), "password authentication failed") || strings.Contains(err.Error(), "role") {
			pg.Fix = "check the user and password in DATABASE_URL"
		}
		ext.Status, ext.Detail = Skip, "postgres is unreachable"
		migs.Status, migs.Detail = Skip, "postgres is unreachable"
		return pg, ext, migs
	}
	defer pool.Close()
	var version string
	var num int
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('server_version_num')::int`).Scan(&version, &num); err != nil {
		pg.Status, pg.Detail, pg.Fix = Fail, err.Error(), "check that DATABASE_URL names a PostgreSQL server"
		return pg, ext, migs
	}
	pg.Status, pg.Detail = OK, fmt.Sprintf("PostgreSQL %s at %s", version, where)
	if num < 150000 {
		pg.Status, pg.Fix = Warn, "Stack VPS is tested on PostgreSQL 15 and later; upgrade the server"
	}
	ext = checkExtensions(ctx, pool)
	migs = checkMigrations(ctx, pool)
	return pg, ext, migs
}

func checkExtensions(ctx context.Context, pool *pgxpool.Pool) Result {
	r := Result{Name: "postgres extensions"}
	var installed, available string
	var preload string
	err := pool.QueryRow(ctx, `SELECT
		coalesce((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), ''),
		coalesce((SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'), ''),
		current_setting('shared_preload_libraries')`).Scan(&installed, &available, &preload)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "check the database user's privileges"
		return r
	}
	switch {
	case installed != "":
		r.Status, r.Detail = OK, "timescaledb "+installed+" installed: hypertables and continuous aggregates"
	case available != "" && strings.Contains(preload, "timescaledb"):
		r.Status, r.Detail = OK, "timescaledb "+available+" available (stackvps migrate creates it)"
	case available != "":
		r.Status, r.Detail = Warn, "timescaledb "+available+" is installed but not preloaded; running on the plain PostgreSQL path"
		r.Fix = "add timescaledb to shared_preload_libraries in postgresql.conf and restart PostgreSQL"
	default:
		r.Status, r.Detail = OK, "timescaledb not installed: plain PostgreSQL path (partitioned readings, views refreshed by the pipeline)"
	}
	return r
}

func checkMigrations(ctx context.Context, pool *pgxpool.Pool) Result {
	r := Result{Name: "migrations"}
	st, err := timescale.Status(ctx, pool)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "run stackvps migrate"
		return r
	}
	switch {
	case len(st.Pending) > 0:
		r.Status = Fail
		r.Detail = fmt.Sprintf("%d of %d applied; pending %s", st.Applied, st.Known, strings.Join(st.Pending, ", "))
		r.Fix = "run stackvps migrate"
	case st.Applied > st.Known:
		r.Status = Fail
		r.Detail = fmt.Sprintf("database has %d migrations, this binary knows %d", st.Applied, st.Known)
		r.Fix = "run a stackvps as new as the one that migrated the database"
	case st.Mode != st.Detected:
		r.Status = Warn
		r.Detail = fmt.Sprintf("all %d applied in %s mode, but %s is now available", st.Applied, st.Mode, st.Detected)
		r.Fix = "the database keeps its mode; migrate a fresh database to switch to " + string(st.Detected)
	default:
		r.Status, r.Detail = OK, fmt.Sprintf("all %d applied (%s mode)", st.Applied, st.Mode)
	}
	return r
}

func checkKafka(ctx context.Context, cfg *config.Config, timeout time.Duration) (kafka, topics Result) {
	kafka = Result{Name: "kafka"}
	topics = Result{Name: "kafka topics"}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	info, err := pipeline.DescribeCluster(ctx, cfg.Kafka)
	if err != nil {
		kafka.Status = Fail
		kafka.Detail = fmt.Sprintf("no broker of %v answered: %v", cfg.Kafka.Brokers, unwrapCtx(err, timeout))
		kafka.Fix = "start Kafka or Redpanda (make services) or set KAFKA_BROKERS"
		topics.Status, topics.Detail = Skip, "kafka is unreachable"
		return kafka, topics
	}
	kafka.Status = OK
	kafka.Detail = fmt.Sprintf("cluster %s, brokers %s", info.ClusterID, strings.Join(info.Brokers, ", "))
	names := cfg.Kafka.Topics.All()
	states, err := pipeline.DescribeTopics(ctx, cfg.Kafka, names)
	if err != nil {
		topics.Status, topics.Detail, topics.Fix = Fail, err.Error(), "check the client's ACLs on the topics"
		return kafka, topics
	}
	var missing, small []string
	for _, n := range names {
		s := states[n]
		switch {
		case s.Missing:
			missing = append(missing, n)
		case s.Partitions < cfg.Kafka.Partitions:
			small = append(small, fmt.Sprintf("%s has %d partitions", n, s.Partitions))
		}
	}
	switch {
	case len(missing) > 0:
		topics.Status = Fail
		topics.Detail = "missing " + strings.Join(missing, ", ")
		topics.Fix = "run stackvps migrate (it creates the topics)"
	case len(small) > 0:
		topics.Status = Warn
		topics.Detail = strings.Join(small, "; ") + fmt.Sprintf(" (kafka.partitions is %d)", cfg.Kafka.Partitions)
		topics.Fix = "fewer partitions cap how far a stage scales out; add partitions with rpk/kafka-topics if needed (keys move)"
	default:
		topics.Status, topics.Detail = OK, fmt.Sprintf("all %d contract topics exist", len(names))
	}
	return kafka, topics
}

func checkMQTT(ctx context.Context, cfg *config.Config, timeout time.Duration) Result {
	r := Result{Name: "mqtt"}
	u, _ := cfg.MQTT.URL()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := mqttclient.Ping(ctx, cfg.MQTT); err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("%s: %v", u, unwrapCtx(err, timeout))
		r.Fix = "start the MQTT broker (make services) or set MQTT_BROKER and MQTT_PORT"
		if strings.Contains(err.Error(), "refused the connection") {
			r.Fix = "check MQTT_USERNAME and MQTT_PASSWORD and the broker's ACLs"
		}
		return r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("MQTT v5 CONNECT accepted by %s", u)
	return r
}

func checkRegistry(ctx context.Context, cfg *config.Config, timeout time.Duration) Result {
	r := Result{Name: "schema registry"}
	if cfg.SchemaRegistry.URL == "" {
		r.Status, r.Detail = Skip, "not configured (Avro without registry framing; set SCHEMA_REGISTRY_URL to use one)"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(cfg.SchemaRegistry.URL, "/")+"/subjects", nil)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "fix SCHEMA_REGISTRY_URL"
		return r
	}
	if cfg.SchemaRegistry.Username != "" {
		req.SetBasicAuth(cfg.SchemaRegistry.Username, cfg.SchemaRegistry.Password.Reveal())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.Status, r.Detail = Fail, unwrapCtx(err, timeout).Error()
		r.Fix = "start the schema registry or unset SCHEMA_REGISTRY_URL"
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.Status, r.Detail = Fail, fmt.Sprintf("GET /subjects answered %s", resp.Status)
		r.Fix = "check that SCHEMA_REGISTRY_URL is a Confluent-compatible registry and its credentials"
		return r
	}
	r.Status, r.Detail = OK, "answering at "+cfg.SchemaRegistry.URL
	return r
}

func unwrapCtx(err error, timeout time.Duration) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s", timeout)
	}
	return err
}

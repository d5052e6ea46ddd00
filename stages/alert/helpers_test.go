package alert_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/alerts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/alert"
)

// env is one test's database, topics and clock, with a user subscribed to
// every alert notification type of P1 and to threshold of P2. The clock
// starts six hours in the past: Kafka refuses record timestamps more than
// an hour ahead of its own clock, and the tests stamp records with it.
type env struct {
	t      *testing.T
	pool   *pgxpool.Pool
	store  *alerts.Store
	kafka  config.Kafka
	cl     *kgo.Client
	rc     *schemas.Codec[schemas.Reading]
	nc     *schemas.Codec[schemas.Notification]
	clock  *testenv.Clock
	group  string
	userID int64
	notes  *collector
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, 2*time.Minute)
	_, err := timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	k := testenv.Kafka(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.DefaultProduceTopic(k.Topics.Readings))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	rc, err := schemas.NewReadingCodec(ctx, config.SchemaRegistry{}, k.Topics.Readings)
	require.NoError(t, err)
	nc, err := schemas.NewNotificationCodec(ctx, config.SchemaRegistry{}, k.Topics.Notifications)
	require.NoError(t, err)
	e := &env{t: t, pool: pool, store: alerts.NewStore(pool, nil), kafka: k, cl: cl, rc: rc, nc: nc,
		clock: testenv.NewClock(time.Now().UTC().Add(-6 * time.Hour).Truncate(time.Second)), group: testenv.Name(t)}
	e.exec(`INSERT INTO catchment_points (code, name) VALUES ('P1', 'Pozo 1'), ('P2', 'Pozo 2')`)
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO users (email, name) VALUES ('ana@example.cl', 'Ana') RETURNING id`).Scan(&e.userID))
	e.exec(`INSERT INTO point_owners (point, user_id, relation) VALUES ('P1', $1, 'PRIMARY'), ('P2', $1, 'PRIMARY')`, e.userID)
	e.exec(`INSERT INTO point_notifications (point, user_id, notification_types)
		VALUES ('P1', $1, ARRAY['threshold','data_gap','stuck_sensor','totalizer_reset','compliance_missing','compliance_rejected']),
		       ('P2', $1, ARRAY['threshold'])`, e.userID)
	e.notes = e.collect(k.Topics.Notifications)
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	_, err := e.pool.Exec(context.Background(), sql, args...)
	require.NoError(e.t, err, sql)
}

// rule inserts an active rule and returns its id.
func (e *env) rule(point, variable string, kind alerts.Kind, params string, renotify time.Duration) int64 {
	e.t.Helper()
	_, err := alerts.ParseParams(kind, json.RawMessage(params))
	require.NoError(e.t, err)
	var id int64
	require.NoError(e.t, e.pool.QueryRow(context.Background(), `INSERT INTO alert_rules (point, variable, kind, params, renotify_interval)
		VALUES ($1, NULLIF($2, ''), $3, $4, NULLIF($5::float8, 0) * interval '1 second') RETURNING id`,
		point, variable, kind, params, renotify.Seconds()).Scan(&id))
	return id
}

// stage is one running alert stage.
type stage struct {
	ev   *alert.Evaluator
	reg  *prometheus.Registry
	stop func() error
}

// start runs an alert stage on the test topics (group e.group).
func (e *env) start(cfg config.Alert) *stage {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	met, err := pipeline.NewMetrics(reg)
	require.NoError(e.t, err)
	pl := config.Default().Pipeline
	pl.GroupPrefix = e.group
	pl.ShutdownTimeout = config.Duration(10 * time.Second)
	pl.SessionTimeout = config.Duration(6 * time.Second)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	deps := pipeline.Deps{Kafka: e.kafka, Pipeline: pl, Metrics: met, Health: pipeline.NewHealth(time.Second), Log: log}
	prod, err := pipeline.NewProducer("alert-notifications", deps)
	require.NoError(e.t, err)
	ev, err := alert.New(cfg, alert.Deps{Store: e.store, Decoder: e.rc, Encoder: e.nc, Producer: prod,
		Topic: e.kafka.Topics.Notifications, Registerer: reg, Log: log, Now: e.clock.Now,
		MissingAfter: config.Default().Submit.MissingAfter.Std()})
	require.NoError(e.t, err)
	st, err := pipeline.NewStage(pipeline.StageConfig{Name: "alert", Inputs: []string{e.kafka.Topics.Readings},
		DLQ: e.kafka.Topics.ReadingsDLQ, Processor: ev, FlushInterval: 100 * time.Millisecond}, deps)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- st.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-errc; prod.Close() })
		return runErr
	}
	e.t.Cleanup(func() { _ = stop() })
	return &stage{ev: ev, reg: reg, stop: stop}
}

// testConfig is the alert section of the tests: a fast evaluation.
func testConfig() config.Alert {
	cfg := config.Default().Alert
	cfg.EvaluateInterval = config.Duration(200 * time.Millisecond)
	return cfg
}

// send produces readings keyed by point, each with Kafka timestamp ts (the
// clock's time when zero) and received_at the clock's time when unset.
func (e *env) send(ts time.Time, rs ...schemas.Reading) {
	e.t.Helper()
	if ts.IsZero() {
		ts = e.clock.Now()
	}
	recs := make([]*kgo.Record, 0, len(rs))
	for _, r := range rs {
		if r.ReceivedAt.IsZero() {
			r.ReceivedAt = e.clock.Now()
		}
		if r.Unit == "" {
			r.Unit = "u"
		}
		r.Provider, r.Source, r.Device = "test", "test", "d1"
		b, err := e.rc.Encode(&r)
		require.NoError(e.t, err)
		recs = append(recs, &kgo.Record{Key: []byte(r.Point), Value: b, Timestamp: ts})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(e.t, e.cl.ProduceSync(ctx, recs...).FirstErr())
}

// consumed waits until the stage has consumed n readings in all.
func (e *env) consumed(s *stage, n int) {
	e.t.Helper()
	eventually(e.t, func() bool {
		return testutil.ToFloat64(counter(e.t, s.reg, "stackvps_alert_readings_total")) >= float64(n)
	}, "the stage to consume %d readings", n)
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func() float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		total := 0.0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metrics:
			for _, m := range mf.GetMetric() {
				for i := 0; i+1 < len(labels); i += 2 {
					found := false
					for _, lp := range m.GetLabel() {
						if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
							found = true
						}
					}
					if !found {
						continue metrics
					}
				}
				switch {
				case m.Counter != nil:
					total += m.Counter.GetValue()
				case m.Gauge != nil:
					total += m.Gauge.GetValue()
				}
			}
		}
		return total
	})
}

// collectorFunc is a gauge computed on collection, for testutil.ToFloat64.
type collectorFunc func() float64

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	ch <- prometheus.NewDesc("value", "value", nil, nil)
}

func (f collectorFunc) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("value", "value", nil, nil), prometheus.GaugeValue, f())
}

func eventually(t *testing.T, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+what, args...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// event is one row of alert_events with its alert.
type event struct {
	AlertID  int64
	RuleID   int64
	Kind     string
	Variable string
	Event    string
	N        int
	Produced bool
}

func (e *env) events() []event {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT a.id, coalesce(a.rule_id, 0), a.kind, coalesce(a.variable, ''),
			ev.event, ev.n, ev.produced_at IS NOT NULL
		FROM alert_events ev JOIN alerts a ON a.id = ev.alert_id ORDER BY ev.id`)
	require.NoError(e.t, err)
	defer rows.Close()
	var out []event
	for rows.Next() {
		var ev event
		require.NoError(e.t, rows.Scan(&ev.AlertID, &ev.RuleID, &ev.Kind, &ev.Variable, &ev.Event, &ev.N, &ev.Produced))
		out = append(out, ev)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// eventsOf returns "event:n" of the rule's events, in order.
func (e *env) eventsOf(rule int64) []string {
	e.t.Helper()
	var out []string
	for _, ev := range e.events() {
		if ev.RuleID == rule {
			out = append(out, ev.Event+":"+strconv.Itoa(ev.N))
		}
	}
	return out
}

// waitEvents waits until the rule's events are want, all produced.
func (e *env) waitEvents(rule int64, want ...string) {
	e.t.Helper()
	eventually(e.t, func() bool {
		got := e.eventsOf(rule)
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if got[i] != want[i] {
				return false
			}
		}
		for _, ev := range e.events() {
			if ev.RuleID == rule && !ev.Produced {
				return false
			}
		}
		return true
	}, "events %v of rule %d (have %v)", want, rule, e.eventsOf(rule))
}

// collector reads a topic from the start in the background.
type collector struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

func (e *env) collect(topic string) *collector {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			f := cl.PollFetches(ctx)
			c.mu.Lock()
			c.recs = append(c.recs, f.Records()...)
			c.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return c
}

// notifications decodes what the notifications topic holds so far.
func (e *env) notifications() []schemas.Notification {
	e.t.Helper()
	e.notes.mu.Lock()
	recs := append([]*kgo.Record(nil), e.notes.recs...)
	e.notes.mu.Unlock()
	out := make([]schemas.Notification, 0, len(recs))
	for _, r := range recs {
		var n schemas.Notification
		require.NoError(e.t, e.nc.Decode(r.Value, &n))
		require.Equal(e.t, n.UserID, string(r.Key), "keyed by user id")
		out = append(out, n)
	}
	return out
}

// notificationIDs returns the distinct ids of the notifications, sorted.
func (e *env) notificationIDs() []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range e.notifications() {
		if !seen[n.ID] {
			seen[n.ID] = true
			out = append(out, n.ID)
		}
	}
	sort.Strings(out)
	return out
}

// reading is a reading of P1 at the base time plus minutes.
func reading(point, variable string, at time.Time, v float64, quality int32) schemas.Reading {
	return schemas.Reading{Point: point, Variable: variable, Time: at, Value: v, Quality: quality}
}

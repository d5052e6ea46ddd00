package aggregate_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/aggregate"
)

// Devices whose readings the aggregate must refuse; the SQL reference leaves
// them out.
const (
	skewDevice = "skew-dev" // stamped an hour after its reception: clock_skew
	lateDevice = "late-dev" // arrives after its hour's deadline: too_late
)

// dataset is a few hours of a small fleet, in production (partition) order:
// out of order within minutes, duplicates (the same point, variable and time
// again, another value), a fast-clock device, a backlog upload, a sparse
// device, a totalizer reset, and one reading stamped far in the future.
// Event times are hours in the past, so received_at is before the stage's
// clock; phase 1 ends with the slot bucket of the last full hour.
func dataset(base time.Time, rng *rand.Rand) []schemas.Reading {
	var rs []schemas.Reading
	add := func(point, dev, variable string, at, received time.Time, v float64, q int32) {
		rs = append(rs, schemas.Reading{Point: point, Device: dev, Variable: variable, Time: at, Value: v,
			Unit: "u", Quality: q, Provider: "test", ReceivedAt: received, Source: "test"})
	}
	total := 5000.0
	for i := 0; i <= 180; i++ {
		at := base.Add(time.Duration(i) * time.Minute)
		rec := at.Add(20 * time.Second)
		// P1: one logger, three variables; minute 30 of the first hour is
		// missing (it comes late, in phase 2).
		if i != 30 {
			add("P1", "d1", "flow", at, rec, 10+5*math.Sin(float64(i)/7), 0)
		}
		q := int32(0)
		total += 0.5 + rng.Float64()
		if i == 100 {
			total, q = 3, 8 // meter reset
		}
		add("P1", "d1", "totalizer", at, rec, total, q)
		add("P1", "d1", "level", at.Add(15*time.Second), rec.Add(15*time.Second), 30+rng.Float64(), 0)
		// P2: flow from a normal device, level from one whose clock is 3
		// minutes fast.
		add("P2", "n", "flow", at, rec, 20+rng.Float64()*4, 0)
		add("P2", "fast", "level", at.Add(3*time.Minute), rec, 12+rng.Float64(), 0)
		// P3: offline for the first 90 minutes, then uploads its backlog.
		p3rec := rec
		if i < 90 {
			p3rec = base.Add(90*time.Minute + time.Duration(i)*time.Second)
		}
		add("P3", "b", "flow", at, p3rec, 1+rng.Float64(), 0)
		// P4: a totalizer every 15 minutes.
		if i%15 == 0 {
			add("P4", "s", "totalizer", at, rec, 100+float64(i), 0)
		}
	}
	// Duplicates: the same (point, variable, time) again; the first wins.
	for i := 0; i < 40; i++ {
		d := rs[rng.IntN(len(rs))]
		d.Value += 1000
		d.ReceivedAt = d.ReceivedAt.Add(time.Duration(rng.IntN(10)) * time.Second)
		rs = append(rs, d)
	}
	// A clock gone wrong: stamped an hour after it was received (at a time
	// no other reading has: the readings table would keep it and shadow a
	// good one).
	add("P1", skewDevice, "flow", base.Add(2*time.Hour+30*time.Minute+7*time.Second), base.Add(90*time.Minute+7*time.Second), 1e6, 0)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].ReceivedAt.Before(rs[j].ReceivedAt) })
	// Interleaving normalize instances: reception out of order by a little.
	for i := 1; i < len(rs); i++ {
		if rng.IntN(10) == 0 {
			rs[i-1], rs[i] = rs[i], rs[i-1]
		}
	}
	return rs
}

// lateReadings arrive after the first emissions: two corrections (one of
// them also a duplicate), and one reading past its hour's deadline.
func lateReadings(base time.Time) []schemas.Reading {
	// After everything of phase 1 (the last reception is 3h+45s), before the
	// first hour's deadline (its end + 1m + allowed_lateness = 3h+1m).
	arrive := base.Add(3*time.Hour + 50*time.Second)
	mk := func(point, dev, variable string, at, received time.Time, v float64) schemas.Reading {
		return schemas.Reading{Point: point, Device: dev, Variable: variable, Time: at, Value: v,
			Unit: "u", Provider: "test", ReceivedAt: received, Source: "test"}
	}
	return []schemas.Reading{
		mk("P1", "d1", "flow", base.Add(30*time.Minute), arrive, 99),
		mk("P1", "d1", "flow", base.Add(30*time.Minute), arrive, 98), // a late duplicate
		mk("P2", "n", "flow", base.Add(90*time.Minute+30*time.Second), arrive, 77),
		// The arrival clock passes the first hour's deadline: refused.
		mk("P1", lateDevice, "flow", base.Add(45*time.Minute+30*time.Second), base.Add(3*time.Hour+2*time.Minute), 55),
	}
}

// kafkaEnv is a test's Kafka topics and a client to them.
type kafkaEnv struct {
	cfg config.Kafka
	cl  *kgo.Client
	rc  *schemas.Codec[schemas.Reading]
	cc  *schemas.Codec[schemas.ComplianceRecord]
}

func newKafkaEnv(t *testing.T, partitions int) *kafkaEnv {
	t.Helper()
	k := testenv.Kafka(t, partitions)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.DefaultProduceTopic(k.Topics.Readings))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	rc, cc := codecs(t)
	return &kafkaEnv{cfg: k, cl: cl, rc: rc, cc: cc}
}

// produce writes readings keyed by point, in order.
func (k *kafkaEnv) produce(t *testing.T, rs []schemas.Reading) {
	t.Helper()
	recs := make([]*kgo.Record, 0, len(rs))
	for _, r := range rs {
		b, err := k.rc.Encode(&r)
		require.NoError(t, err)
		recs = append(recs, &kgo.Record{Key: []byte(r.Point), Value: b, Timestamp: r.Time})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, k.cl.ProduceSync(ctx, recs...).FirstErr())
}

// collector reads a topic from the start in the background.
type collector struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

func (k *kafkaEnv) collect(t *testing.T, topic string) *collector {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.cfg.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
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
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return c
}

func (c *collector) snapshot() []*kgo.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*kgo.Record(nil), c.recs...)
}

// emissions decodes the compliance records collected so far.
func (k *kafkaEnv) emissions(t *testing.T, c *collector) []emission {
	t.Helper()
	var out []emission
	for _, r := range c.snapshot() {
		hdrs := make([]pipeline.Header, 0, len(r.Headers))
		for _, h := range r.Headers {
			hdrs = append(hdrs, pipeline.Header{Key: h.Key, Value: h.Value})
		}
		out = append(out, decodeEmission(t, k.cc, r.Key, r.Value, hdrs))
	}
	return out
}

// newStage builds the aggregate stage on the test topics.
func newStage(t *testing.T, k config.Kafka, group string, agg pipeline.Processor, reg *prometheus.Registry) *pipeline.Stage {
	t.Helper()
	met, err := pipeline.NewMetrics(reg)
	require.NoError(t, err)
	pl := config.Default().Pipeline
	pl.GroupPrefix = group
	pl.ShutdownTimeout = config.Duration(10 * time.Second)
	pl.SessionTimeout = config.Duration(6 * time.Second)
	s, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "aggregate", Inputs: []string{k.Topics.Readings}, Output: k.Topics.ComplianceRecords,
		DLQ: k.Topics.ReadingsDLQ, Processor: agg, FlushInterval: 100 * time.Millisecond,
	}, pipeline.Deps{Kafka: k, Pipeline: pl, Metrics: met, Health: pipeline.NewHealth(time.Second),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	return s
}

func runInBackground(t *testing.T, s *pipeline.Stage) (stop func() error) {
	t.Helper()
	return testenv.RunInBackground(t, s.Run)
}

// expectedKeys lists the (point, hour) records the accepted readings call
// for: every hour with a reading, and every hour whose slot bucket has one.
func expectedKeys(rs []schemas.Reading, slotVars map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, r := range rs {
		if r.Device == skewDevice || r.Device == lateDevice {
			continue
		}
		h := r.Time.UTC().Truncate(time.Hour)
		out[r.Point+"@"+h.Format(time.RFC3339)] = true
		if r.Time.Sub(h) < time.Minute && slotVars[r.Variable] {
			out[r.Point+"@"+h.Add(-time.Hour).Format(time.RFC3339)] = true
		}
	}
	return out
}

// TestHourlyRecordsMatchSQLIntegration runs the stage on real Kafka and
// checks every hourly record against the same aggregation computed in SQL
// over the same readings stored in PostgreSQL.
func TestHourlyRecordsMatchSQLIntegration(t *testing.T) {
	for _, mode := range []string{"instant", "mean"} {
		t.Run(mode, func(t *testing.T) {
			k := newKafkaEnv(t, 3)
			pool := testenv.Postgres(t)
			ctx := testenv.Context(t, 3*time.Minute)
			_, err := timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
			require.NoError(t, err)

			base := time.Now().UTC().Truncate(time.Hour).Add(-6 * time.Hour)
			phase1 := dataset(base, rand.New(rand.NewPCG(1, 2)))
			phase2 := lateReadings(base)
			k.produce(t, phase1)

			cfg := cfgWith(func(c *config.Aggregate) { c.ValueMode = mode })
			reg := prometheus.NewRegistry()
			rc, cc := codecs(t)
			agg, err := aggregate.New(cfg, aggregate.Deps{Decoder: rc, Encoder: cc, Registerer: reg,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			require.NoError(t, err)
			out := k.collect(t, k.cfg.Topics.ComplianceRecords)
			dlq := k.collect(t, k.cfg.Topics.ReadingsDLQ)
			stop := runInBackground(t, newStage(t, k.cfg, testenv.Name(t), agg, reg))

			slotVars := map[string]bool{"totalizer": true, "flow": mode == "instant", "level": mode == "instant"}
			want := expectedKeys(phase1, slotVars)
			require.Eventually(t, func() bool { return len(latest(k.emissions(t, out))) == len(want) },
				60*time.Second, 100*time.Millisecond, "every hour is emitted once the fleet is idle")
			first := latest(k.emissions(t, out))

			k.produce(t, phase2)
			require.Eventually(t, func() bool {
				return len(dlq.snapshot()) == 2 && counterValue(t, reg, "stackvps_aggregate_corrections_total") >= 2
			}, 60*time.Second, 100*time.Millisecond, "late readings correct their hours; the skewed and the too late are dead-lettered")
			time.Sleep(500 * time.Millisecond) // a few more flushes: nothing else may come
			require.NoError(t, stop())

			reasons := map[string]string{}
			for _, r := range dlq.snapshot() {
				var rd schemas.Reading
				require.NoError(t, k.rc.Decode(r.Value, &rd))
				for _, h := range r.Headers {
					if h.Key == pipeline.HeaderErrorReason {
						reasons[rd.Device] = string(h.Value)
					}
				}
			}
			require.Equal(t, map[string]string{skewDevice: "clock_skew", lateDevice: "too_late"}, reasons)

			all := k.emissions(t, out)
			got := latest(all)
			require.Len(t, got, len(want))
			p1 := "P1@" + base.Format(time.RFC3339)
			require.Greater(t, got[p1].rec.Version, first[p1].rec.Version, "the late reading corrected P1's first hour")
			for _, e := range all {
				if top := got[e.rec.Point+"@"+e.rec.PeriodStart.UTC().Format(time.RFC3339)]; top.rec.Version == e.rec.Version {
					require.Equal(t, top.value, e.value, "equal versions are equal records")
				}
			}

			// The same readings, stored as the sink stores them.
			storeReadings(t, pool, append(append([]schemas.Reading(nil), phase1...), phase2...))
			ref := sqlReference(t, pool, mode, cfg.ExpectedInterval.Std())
			require.Len(t, ref, len(got), "SQL and the stage agree on which hours exist")
			for key, r := range ref {
				e, ok := got[key]
				require.True(t, ok, "no record for %s", key)
				compareWithSQL(t, key, e, r)
			}
			t.Logf("%d readings, %d hourly records on the topic for %d (point, hour)s, %.0f corrections, all equal to SQL",
				len(phase1)+len(phase2), len(all), len(got), counterValue(t, reg, "stackvps_aggregate_corrections_total"))
		})
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// storeReadings inserts readings in order, the first of a (point, variable,
// time) winning, as the timescale sink does.
func storeReadings(t *testing.T, pool *pgxpool.Pool, rs []schemas.Reading) {
	t.Helper()
	batch := &pgx.Batch{}
	for _, r := range rs {
		batch.Queue(`INSERT INTO readings (time, point, variable, value, quality, device) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (point, variable, time) DO NOTHING`, r.Time, r.Point, r.Variable, r.Value, r.Quality, r.Device)
	}
	require.NoError(t, pool.SendBatch(context.Background(), batch).Close())
}

// sqlHour is one (point, hour) as SQL computes it.
type sqlHour struct {
	stats                  map[string]aggregate.VariableStats
	flow, level, totalizer *float64
	received               int32
}

func sqlReference(t *testing.T, pool *pgxpool.Pool, mode string, interval time.Duration) map[string]*sqlHour {
	t.Helper()
	ctx := context.Background()
	const accepted = `SELECT * FROM readings WHERE device NOT IN ('` + skewDevice + `', '` + lateDevice + `')`
	out := map[string]*sqlHour{}
	hour := func(point string, h time.Time) *sqlHour {
		k := point + "@" + h.UTC().Format(time.RFC3339)
		if out[k] == nil {
			out[k] = &sqlHour{stats: map[string]aggregate.VariableStats{}}
		}
		return out[k]
	}
	rows, err := pool.Query(ctx, `SELECT point, date_trunc('hour', time, 'UTC'), variable, count(*), min(value), max(value), avg(value),
			(array_agg(value ORDER BY time DESC))[1], max(time)
		FROM (`+accepted+`) r GROUP BY 1, 2, 3`)
	require.NoError(t, err)
	for rows.Next() {
		var (
			point, variable string
			h, lastTime     time.Time
			st              aggregate.VariableStats
		)
		require.NoError(t, rows.Scan(&point, &h, &variable, &st.Count, &st.Min, &st.Max, &st.Avg, &st.Last, &lastTime))
		st.LastTime = lastTime.UTC()
		hour(point, h).stats[variable] = st
	}
	require.NoError(t, rows.Err())

	// The value at the slot instant: the earliest reading in the first
	// minute of the next hour.
	rows, err = pool.Query(ctx, `SELECT DISTINCT ON (point, variable, h) point, variable, h, value
		FROM (SELECT *, date_trunc('hour', time, 'UTC') - interval '1 hour' AS h FROM (`+accepted+`) a) r
		WHERE time < h + interval '1 hour 1 minute' AND variable IN ('flow', 'totalizer', 'level')
		ORDER BY point, variable, h, time`)
	require.NoError(t, err)
	for rows.Next() {
		var (
			point, variable string
			h               time.Time
			v               float64
		)
		require.NoError(t, rows.Scan(&point, &variable, &h, &v))
		switch {
		case variable == "totalizer":
			hour(point, h).totalizer = &v
		case mode != "instant":
			// Flow and level come from the mean: this reading calls for no
			// record of the hour before.
		case variable == "flow":
			hour(point, h).flow = &v
		default:
			hour(point, h).level = &v
		}
	}
	require.NoError(t, rows.Err())

	rows, err = pool.Query(ctx, `SELECT point, date_trunc('hour', time, 'UTC'),
			count(DISTINCT floor(extract(epoch FROM time - date_trunc('hour', time, 'UTC')) / $1))
		FROM (`+accepted+`) r WHERE variable IN ('flow', 'totalizer', 'level') GROUP BY 1, 2`, interval.Seconds())
	require.NoError(t, err)
	for rows.Next() {
		var (
			point string
			h     time.Time
			n     int32
		)
		require.NoError(t, rows.Scan(&point, &h, &n))
		hour(point, h).received = n
	}
	require.NoError(t, rows.Err())
	if mode == "mean" {
		for _, hr := range out {
			if st, ok := hr.stats["flow"]; ok {
				hr.flow = &st.Avg
			}
			if st, ok := hr.stats["level"]; ok {
				hr.level = &st.Avg
			}
		}
	}
	return out
}

func compareWithSQL(t *testing.T, key string, e emission, want *sqlHour) {
	t.Helper()
	near := func(w, g float64, what string) {
		require.InDelta(t, w, g, 1e-9*max(1, math.Abs(w)), "%s: %s", key, what)
	}
	nearPtr := func(w, g *float64, what string) {
		if w == nil {
			require.Nil(t, g, "%s: %s must be null", key, what)
			return
		}
		require.NotNil(t, g, "%s: %s", key, what)
		near(*w, *g, what)
	}
	nearPtr(want.flow, e.rec.Flow, "flow")
	nearPtr(want.level, e.rec.Level, "level")
	nearPtr(want.totalizer, e.rec.Totalizer, "totalizer")
	require.Equal(t, want.received, e.rec.Received, "%s: received", key)
	require.Equal(t, int32(60), e.rec.Expected, "%s: expected", key)
	got := e.hourStats(t)
	require.Len(t, got, len(want.stats), "%s: variables", key)
	for variable, w := range want.stats {
		g, ok := got[variable]
		require.True(t, ok, "%s: %s", key, variable)
		require.Equal(t, w.Count, g.Count, "%s %s: count", key, variable)
		near(w.Min, g.Min, variable+" min")
		near(w.Max, g.Max, variable+" max")
		near(w.Avg, g.Avg, variable+" avg")
		near(w.Last, g.Last, variable+" last")
		require.Equal(t, w.LastTime, g.LastTime, "%s %s: last time", key, variable)
	}
}

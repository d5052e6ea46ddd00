package aggregate_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/aggregate"
)

// childName is the child process that runs the aggregate stage
// (childMain) instead of the tests: the kill test starts it as a real
// process and kills it with SIGKILL.
const childName = "aggregate"

// childConfig is what the parent passes its child.
type childConfig struct {
	Kafka     config.Kafka
	Group     string
	Aggregate config.Aggregate
}

func TestMain(m *testing.M) {
	testenv.RunChild(childName, childMain)
	goleak.VerifyTestMain(m)
}

// childMain runs the aggregate stage as `stackvps run --stages aggregate`
// will, until SIGTERM or SIGKILL.
func childMain(cc childConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rc, err := schemas.NewReadingCodec(ctx, config.SchemaRegistry{}, cc.Kafka.Topics.Readings)
	if err != nil {
		return err
	}
	enc, err := schemas.NewComplianceRecordCodec(ctx, config.SchemaRegistry{}, cc.Kafka.Topics.ComplianceRecords)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	agg, err := aggregate.New(cc.Aggregate, aggregate.Deps{Decoder: rc, Encoder: enc, Registerer: reg, Log: log})
	if err != nil {
		return err
	}
	met, err := pipeline.NewMetrics(reg)
	if err != nil {
		return err
	}
	pl := config.Default().Pipeline
	pl.GroupPrefix = cc.Group
	pl.SessionTimeout = config.Duration(6 * time.Second)
	st, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "aggregate", Inputs: []string{cc.Kafka.Topics.Readings}, Output: cc.Kafka.Topics.ComplianceRecords,
		DLQ: cc.Kafka.Topics.ReadingsDLQ, Processor: agg, FlushInterval: 100 * time.Millisecond,
	}, pipeline.Deps{Kafka: cc.Kafka, Pipeline: pl, Metrics: met, Health: pipeline.NewHealth(time.Second), Log: log})
	if err != nil {
		return err
	}
	return st.Run(ctx)
}

// committed returns the group's committed offsets, per partition.
func committed(t *testing.T, k config.Kafka, group string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	require.NoError(t, err)
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.Topic == k.Topics.Readings {
			out[o.Partition] = o.At
		}
	})
	return out
}

// TestKillMidHourIntegration kills the stage with SIGKILL while an hour is
// half consumed, restarts it, and checks that a consumer keeping the highest
// version per (point, source, period) sees each hour once and correct, and
// that every re-emission of that version is a byte-for-byte duplicate. With
// a long allowed_lateness the previous hour is still held at the kill and is
// re-emitted whole; with a short one it was released, and the replay may
// re-emit it from its slot readings only, with a lower version.
func TestKillMidHourIntegration(t *testing.T) {
	tests := []struct {
		name     string
		lateness time.Duration
		// the committed offset at the kill: at the previous hour's start
		// (still held) or past it (released)
		released bool
	}{
		{name: "previous hour held", lateness: 2 * time.Hour},
		{name: "previous hour released", lateness: 30 * time.Minute, released: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { killMidHour(t, tt.lateness, tt.released) })
	}
}

func killMidHour(t *testing.T, lateness time.Duration, released bool) {
	// One partition, so offsets count the records produced.
	k := newKafkaEnv(t, 1)
	group := testenv.Name(t)
	cfg := config.Default().Aggregate
	cfg.AllowedLateness = config.Duration(lateness)
	// Windows close on watermarks only: the readings are hours old, and the
	// test decides when an hour is complete.
	cfg.IdleTimeout = config.Duration(24 * time.Hour)
	cc := childConfig{Kafka: k.cfg, Group: group, Aggregate: cfg}

	hourA := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	hourB := hourA.Add(time.Hour)
	points := []string{"P1", "P2"}
	// minute i from hourA: flow i, totalizer 1000+i, level 20+i/10.
	readings := func(from, to int) []schemas.Reading {
		var rs []schemas.Reading
		for i := from; i < to; i++ {
			for _, p := range points {
				at := hourA.Add(time.Duration(i) * time.Minute)
				rs = append(rs, rd(p, p+"-logger", "flow", at, float64(i)),
					rd(p, p+"-logger", "totalizer", at, 1000+float64(i)),
					rd(p, p+"-logger", "level", at, 20+float64(i)/10))
			}
		}
		return rs
	}
	out := k.collect(t, k.cfg.Topics.ComplianceRecords)
	emitted := func(p string, h time.Time) []emission {
		var es []emission
		for _, e := range k.emissions(t, out) {
			if e.rec.Point == p && e.rec.PeriodStart.Equal(h) {
				es = append(es, e)
			}
		}
		return es
	}
	heldPast := func(off int64) bool {
		c := committed(t, k.cfg, group+"-aggregate")
		if len(c) == 0 {
			return false
		}
		for _, o := range c {
			if o < off {
				return false
			}
		}
		return true
	}

	// Hour A, and hour B up to :29 (A's slot bucket is B's first minute).
	k.produce(t, readings(0, 90))
	first := testenv.StartChild(t, childName, cc)
	require.Eventually(t, func() bool { return len(emitted("P1", hourA)) > 0 && len(emitted("P2", hourA)) > 0 },
		60*time.Second, 100*time.Millisecond, "hour A is emitted")
	require.Eventually(t, func() bool { return heldPast(0) }, 30*time.Second, 100*time.Millisecond, "offsets are committed")
	// More of hour B: the arrival clock passes A's deadline when lateness
	// is short.
	k.produce(t, readings(90, 105))
	if released {
		// Held at B's first record: 2 points x 3 variables x 60 minutes.
		require.Eventually(t, func() bool { return heldPast(360) }, 30*time.Second, 100*time.Millisecond, "hour A is released")
	} else {
		time.Sleep(300 * time.Millisecond)
	}
	testenv.Kill9(t, first)
	require.Empty(t, emitted("P1", hourB), "hour B was open when the stage died")
	t.Logf("committed at the kill: %v", committed(t, k.cfg, group+"-aggregate"))

	// The rest of hour B and its slot bucket arrive while the stage is down.
	k.produce(t, readings(105, 123))
	second := testenv.StartChild(t, childName, cc)
	require.Eventually(t, func() bool {
		for _, p := range points {
			es := emitted(p, hourB)
			if len(es) == 0 || latest(es)[p+"@"+hourB.Format(time.RFC3339)].rec.Version != 183 {
				return false
			}
		}
		return true
	}, 90*time.Second, 100*time.Millisecond, "hour B is emitted whole after the restart")
	time.Sleep(500 * time.Millisecond)
	testenv.Kill9(t, second)

	all := k.emissions(t, out)
	view := latest(all)
	for _, p := range points {
		for _, tc := range []struct {
			start time.Time
			slot  int // minute (from hour A) of the slot instant
		}{{hourA, 60}, {hourB, 120}} {
			key := p + "@" + tc.start.Format(time.RFC3339)
			e, ok := view[key]
			require.True(t, ok, key)
			r := e.rec
			require.Equal(t, int32(183), r.Version, "%s: 60 minutes x 3 variables + 3 slot readings", key)
			require.Equal(t, float64(tc.slot), *r.Flow, key)
			require.Equal(t, 1000+float64(tc.slot), *r.Totalizer, key)
			require.InDelta(t, 20+float64(tc.slot)/10, *r.Level, 1e-9, key)
			require.Equal(t, int32(60), r.Received, key)
			require.Equal(t, tc.start.Add(time.Hour+10*time.Second), r.EmittedAt.UTC(), "%s: emitted_at is the slot reading's reception", key)
			st := e.hourStats(t)
			require.Equal(t, 60, st["flow"].Count, key)
			var copies, lower int
			for _, o := range all {
				if o.key == e.key && o.rec.PeriodStart.Equal(tc.start) {
					copies++
					if o.rec.Version == r.Version {
						require.Equal(t, e.value, o.value, "%s: a re-emission is byte-for-byte the same", key)
						require.Equal(t, e.stats, o.stats, key)
					} else {
						lower++
						require.Less(t, o.rec.Version, r.Version, key)
					}
				}
			}
			t.Logf("%s: emitted %d time(s), %d with a lower version; highest version %d", key, copies, lower, r.Version)
		}
	}
}

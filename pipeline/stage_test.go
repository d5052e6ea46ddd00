package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
)

type harness struct {
	kafka config.Kafka
	deps  pipeline.Deps
	reg   *prometheus.Registry
}

func newHarness(t *testing.T, partitions int) *harness {
	t.Helper()
	k := testenv.Kafka(t, partitions)
	reg := prometheus.NewRegistry()
	met, err := pipeline.NewMetrics(reg)
	require.NoError(t, err)
	pl := config.Default().Pipeline
	pl.RetryInitial = config.Duration(10 * time.Millisecond)
	pl.RetryMax = config.Duration(50 * time.Millisecond)
	pl.ShutdownTimeout = config.Duration(10 * time.Second)
	pl.GroupPrefix = testenv.Name(t)
	return &harness{
		kafka: k,
		reg:   reg,
		deps: pipeline.Deps{
			Kafka: k, Pipeline: pl, Metrics: met,
			Health: pipeline.NewHealth(2 * time.Second),
			Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
	}
}

// produce writes n records keyed dev-<i%devices> with value "<i>".
func (h *harness) produce(t *testing.T, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("dev-" + strconv.Itoa(i%7)), Value: []byte(strconv.Itoa(i))})
	}
	require.NoError(t, cl.ProduceSync(context.Background(), recs...).FirstErr())
}

// consume reads topic from the start until it has n records or the deadline.
func (h *harness) consume(t *testing.T, topic string, n int, within time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		f := cl.PollFetches(ctx)
		out = append(out, f.Records()...)
	}
	return out
}

// committed returns the group's committed offsets summed over partitions.
func (h *harness) committedCount(t *testing.T, stage string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := newAdmin(cl)
	return adm.committed(t, h.deps.Pipeline.GroupPrefix+"-"+stage)
}

// runStage runs a Stage or a BatchStage until the returned stop is called
// or the test ends.
func runStage(t *testing.T, s interface{ Run(context.Context) error }) (stop func() error) {
	t.Helper()
	return testenv.RunInBackground(t, s.Run)
}

var errBad = errors.New("value is not wanted")

func TestPermanentErrorGoesToDLQIntegration(t *testing.T) {
	h := newHarness(t, 3)
	proc := pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
		v, _ := strconv.Atoi(string(r.Value))
		if v%10 == 3 {
			return nil, pipeline.Permanent("bad_payload", fmt.Errorf("reading %d: %w", v, errBad))
		}
		return []pipeline.Record{{Key: r.Key, Value: append([]byte("ok:"), r.Value...)}}, nil
	})
	s, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "perm", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
		DLQ: h.kafka.Topics.RawDLQ, Processor: proc,
	}, h.deps)
	require.NoError(t, err)
	h.produce(t, h.kafka.Topics.Raw, 100)
	stop := runStage(t, s)

	out := h.consume(t, h.kafka.Topics.Readings, 90, 30*time.Second)
	dead := h.consume(t, h.kafka.Topics.RawDLQ, 10, 30*time.Second)
	require.Len(t, out, 90)
	require.Len(t, dead, 10)
	for _, d := range dead {
		hdr := headers(d)
		require.Contains(t, hdr[pipeline.HeaderError], "value is not wanted")
		require.Equal(t, "bad_payload", hdr[pipeline.HeaderErrorReason])
		require.Equal(t, "perm", hdr[pipeline.HeaderErrorStage])
		require.Equal(t, h.kafka.Topics.Raw, hdr[pipeline.HeaderSourceTopic])
		require.NotEmpty(t, hdr[pipeline.HeaderSourceOffset])
		v, _ := strconv.Atoi(string(d.Value))
		require.Equal(t, 3, v%10, "the original bytes are dead-lettered unchanged")
	}
	require.Eventually(t, func() bool { return h.committedCount(t, "perm") == 100 }, 20*time.Second, 100*time.Millisecond)
	require.NoError(t, stop())
	require.Equal(t, 10.0, testutil.ToFloat64(counter(t, h.reg, "stackvps_stage_dlq_total", "perm")))
	require.Equal(t, 100.0, testutil.ToFloat64(counter(t, h.reg, "stackvps_stage_records_in_total", "perm")))
}

func TestTransientErrorIsRetriedIntegration(t *testing.T) {
	h := newHarness(t, 2)
	var failures atomic.Int32
	proc := pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
		// The "database" is down for the first 25 calls.
		if failures.Add(1) <= 25 {
			return nil, pipeline.Transient(errors.New("connection refused"))
		}
		return []pipeline.Record{{Key: r.Key, Value: r.Value}}, nil
	})
	s, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "trans", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
		DLQ: h.kafka.Topics.RawDLQ, Processor: proc,
	}, h.deps)
	require.NoError(t, err)
	h.produce(t, h.kafka.Topics.Raw, 20)
	stop := runStage(t, s)
	out := h.consume(t, h.kafka.Topics.Readings, 20, 30*time.Second)
	require.Len(t, out, 20, "every record arrives once the dependency is back")
	require.Eventually(t, func() bool { return h.committedCount(t, "trans") == 20 }, 20*time.Second, 100*time.Millisecond)
	require.NoError(t, stop())
	require.Empty(t, h.consume(t, h.kafka.Topics.RawDLQ, 1, 2*time.Second), "transient errors never reach the DLQ")
	require.GreaterOrEqual(t, testutil.ToFloat64(counter(t, h.reg, "stackvps_stage_retries_total", "trans")), 25.0)
}

func TestShutdownDrainsIntegration(t *testing.T) {
	h := newHarness(t, 1)
	started := make(chan struct{})
	var once sync.Once
	var processed atomic.Int32
	proc := pipeline.ProcessorFunc(func(ctx context.Context, r pipeline.Record) ([]pipeline.Record, error) {
		once.Do(func() { close(started) })
		time.Sleep(20 * time.Millisecond) // slow work, not interruptible
		processed.Add(1)
		return []pipeline.Record{{Key: r.Key, Value: r.Value}}, nil
	})
	h.deps.Pipeline.MaxPollRecords = 50
	s, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "drain", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
		DLQ: h.kafka.Topics.RawDLQ, Processor: proc,
	}, h.deps)
	require.NoError(t, err)
	h.produce(t, h.kafka.Topics.Raw, 200)
	stop := runStage(t, s)
	<-started
	require.NoError(t, stop(), "a drain within the timeout is a clean stop")
	n := processed.Load()
	require.Greater(t, n, int32(0))
	// Everything processed was produced and committed: nothing half done.
	require.Equal(t, int64(n), h.committedCount(t, "drain"))
	require.Len(t, h.consume(t, h.kafka.Topics.Readings, int(n), 10*time.Second), int(n))

	// A restarted stage picks up exactly where the drain left off.
	reg := prometheus.NewRegistry()
	met, err := pipeline.NewMetrics(reg)
	require.NoError(t, err)
	h.deps.Metrics = met
	s2, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "drain", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
		DLQ: h.kafka.Topics.RawDLQ, Processor: proc,
	}, h.deps)
	require.NoError(t, err)
	stop2 := runStage(t, s2)
	out := h.consume(t, h.kafka.Topics.Readings, 200, 60*time.Second)
	require.NoError(t, stop2())
	require.Len(t, out, 200, "no record lost and none twice across the restart")
	seen := map[string]bool{}
	for _, r := range out {
		require.False(t, seen[string(r.Value)], "record %s produced twice", r.Value)
		seen[string(r.Value)] = true
	}
}

func TestStageConfigValidation(t *testing.T) {
	h := pipeline.Deps{Metrics: nil}
	_, err := pipeline.NewStage(pipeline.StageConfig{Name: "x"}, h)
	require.ErrorContains(t, err, "input topic is required")
	_, err = pipeline.NewStage(pipeline.StageConfig{Name: "x", Inputs: []string{"a"}}, h)
	require.ErrorContains(t, err, "dead-letter topic is required")
	_, err = pipeline.NewStage(pipeline.StageConfig{Name: "x", Inputs: []string{"a"}, DLQ: "d"}, h)
	require.ErrorContains(t, err, "processor is required")
}

func TestErrorClassification(t *testing.T) {
	base := errors.New("boom")
	require.True(t, pipeline.IsTransient(fmt.Errorf("wrapped: %w", pipeline.Transient(base))))
	require.False(t, pipeline.IsTransient(pipeline.Permanent("bad_payload", base)))
	require.False(t, pipeline.IsTransient(base), "unknown errors are permanent")
	require.Equal(t, "bad_payload", pipeline.Reason(fmt.Errorf("x: %w", pipeline.Permanent("bad_payload", base))))
	require.Equal(t, "unclassified", pipeline.Reason(base))
	require.ErrorIs(t, pipeline.Transient(base), base)
	require.Nil(t, pipeline.Transient(nil))
}

func TestBackoff(t *testing.T) {
	b := pipeline.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for attempt := range 20 {
		d := b.Delay(attempt)
		require.LessOrEqual(t, d, time.Second)
		require.GreaterOrEqual(t, d, 50*time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, pipeline.Backoff{Initial: time.Hour, Max: time.Hour}.Wait(ctx, 0), context.Canceled)
}

func headers(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func counter(t *testing.T, reg *prometheus.Registry, name, stage string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" && l.GetValue() == stage {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	c.Add(total)
	return c
}

type admin struct{ adm *kadm.Client }

func newAdmin(cl *kgo.Client) admin { return admin{kadm.NewClient(cl)} }

func (a admin) committed(t *testing.T, group string) int64 {
	t.Helper()
	offs, err := a.adm.FetchOffsets(context.Background(), group)
	require.NoError(t, err)
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

// holder keeps records whose value is "hold" in its state until the test
// releases them, like an open window.
type holder struct {
	topic string
	mu    sync.Mutex
	held  map[int32]int64 // partition -> lowest held offset
	seen  []int64
	drop  atomic.Int32
}

func (h *holder) Process(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, r.Offset)
	if string(r.Value) == "hold" {
		if cur, ok := h.held[r.Partition]; !ok || r.Offset < cur {
			h.held[r.Partition] = r.Offset
		}
	}
	return nil, nil
}

func (h *holder) Flush(context.Context, time.Time) ([]pipeline.Record, error) { return nil, nil }

func (h *holder) HeldOffsets() map[string]map[int32]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[int32]int64{}
	for p, o := range h.held {
		out[p] = o
	}
	return map[string]map[int32]int64{h.topic: out}
}

func (h *holder) DropPartitions(map[string][]int32) { h.drop.Add(1) }

func TestHeldOffsetsAreNotCommittedIntegration(t *testing.T) {
	h := newHarness(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	for i := range 10 {
		v := "x"
		if i == 5 {
			v = "hold"
		}
		require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Topic: h.kafka.Topics.Raw, Value: []byte(v)}).FirstErr())
	}
	first := &holder{topic: h.kafka.Topics.Raw, held: map[int32]int64{}}
	s, err := pipeline.NewStage(pipeline.StageConfig{Name: "hold", Inputs: []string{h.kafka.Topics.Raw},
		Output: h.kafka.Topics.Readings, DLQ: h.kafka.Topics.RawDLQ, Processor: first, FlushInterval: 100 * time.Millisecond}, h.deps)
	require.NoError(t, err)
	stop := runStage(t, s)
	require.Eventually(t, func() bool { return h.committedCount(t, "hold") == 5 }, 20*time.Second, 50*time.Millisecond,
		"the commit stops at the held record")
	require.NoError(t, stop())
	require.Positive(t, first.drop.Load(), "leaving the group revokes the partitions")

	// A restarted stage consumes again from the held record on.
	second := &holder{topic: h.kafka.Topics.Raw, held: map[int32]int64{}}
	reg := prometheus.NewRegistry()
	h.deps.Metrics, err = pipeline.NewMetrics(reg)
	require.NoError(t, err)
	s2, err := pipeline.NewStage(pipeline.StageConfig{Name: "hold", Inputs: []string{h.kafka.Topics.Raw},
		Output: h.kafka.Topics.Readings, DLQ: h.kafka.Topics.RawDLQ, Processor: second, FlushInterval: 100 * time.Millisecond}, h.deps)
	require.NoError(t, err)
	stop2 := runStage(t, s2)
	require.Eventually(t, func() bool {
		second.mu.Lock()
		defer second.mu.Unlock()
		return len(second.seen) == 5
	}, 20*time.Second, 50*time.Millisecond)
	require.NoError(t, stop2())
	require.Equal(t, []int64{5, 6, 7, 8, 9}, second.seen)
}

package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/pipeline"
)

// memStore is the database of the batch stage tests: what a BatchWriter
// stored, and the offsets stored with it, shared by the members of a group.
type memStore struct {
	mu      sync.Mutex
	offsets map[string]map[int32]int64
	stored  map[string]int // "topic/partition/offset" -> times stored
	writes  []memWrite
}

// memWrite is one successful Write.
type memWrite struct {
	member     string
	recs       []pipeline.Record
	start, end time.Time
}

func newMemStore() *memStore {
	return &memStore{offsets: map[string]map[int32]int64{}, stored: map[string]int{}}
}

// memWriter is one member's BatchWriter over a memStore. before, when set,
// runs at the start of every Write attempt with the attempt's number
// (0-based, over the writer's life); its error fails the attempt with
// nothing stored.
type memWriter struct {
	store    *memStore
	member   string
	attempts atomic.Int64
	before   func(ctx context.Context, attempt int64, recs []pipeline.Record) error
}

func (w *memWriter) Offsets(_ context.Context, _, topic string, partitions []int32) (map[int32]int64, error) {
	w.store.mu.Lock()
	defer w.store.mu.Unlock()
	out := map[int32]int64{}
	for _, p := range partitions {
		if o, ok := w.store.offsets[topic][p]; ok {
			out[p] = o
		}
	}
	return out, nil
}

func (w *memWriter) Write(ctx context.Context, _ string, recs []pipeline.Record, next map[string]map[int32]int64, dead pipeline.DeadLetterFunc) error {
	start := time.Now()
	if w.before != nil {
		if err := w.before(ctx, w.attempts.Add(1)-1, recs); err != nil {
			return err
		}
	}
	var kept []pipeline.Record
	for _, r := range recs {
		if string(r.Value) == "bad" {
			if err := dead(ctx, r, pipeline.Permanent("bad_record", errors.New("not a reading"))); err != nil {
				return err
			}
			continue
		}
		kept = append(kept, r)
	}
	w.store.mu.Lock()
	defer w.store.mu.Unlock()
	for _, r := range kept {
		w.store.stored[fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)]++
	}
	for topic, parts := range next {
		if w.store.offsets[topic] == nil {
			w.store.offsets[topic] = map[int32]int64{}
		}
		for p, o := range parts {
			// Forward only, as sink_offsets.
			if o > w.store.offsets[topic][p] {
				w.store.offsets[topic][p] = o
			}
		}
	}
	w.store.writes = append(w.store.writes, memWrite{member: w.member, recs: append([]pipeline.Record(nil), recs...), start: start, end: time.Now()})
	return nil
}

// requireExactlyOnce checks that every one of the n records of topic is
// stored once, that each member wrote every partition in offset order, and
// that the stored offsets are at the end of every partition.
func (s *memStore) requireExactlyOnce(t *testing.T, topic string, n int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var twice []string
	for k, c := range s.stored {
		if c > 1 {
			twice = append(twice, k)
		}
	}
	require.Empty(t, twice, "records stored twice")
	require.Len(t, s.stored, n, "every record stored")
	last := map[string]int64{}
	for _, w := range s.writes {
		for _, r := range w.recs {
			k := fmt.Sprintf("%s/%s/%d", w.member, r.Topic, r.Partition)
			if prev, ok := last[k]; ok {
				require.Greater(t, r.Offset, prev, "%s written out of order", k)
			}
			last[k] = r.Offset
		}
	}
	var total int64
	for _, o := range s.offsets[topic] {
		total += o
	}
	require.Equal(t, int64(n), total, "stored offsets at the end of every partition")
}

func (s *memStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.stored)
}

func (s *memStore) writesOf(member string) []memWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []memWrite
	for _, w := range s.writes {
		if w.member == member {
			out = append(out, w)
		}
	}
	return out
}

func newBatchStage(t *testing.T, h *harness, w pipeline.BatchWriter, maxBatch int, linger time.Duration) (*pipeline.BatchStage, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	met, err := pipeline.NewMetrics(reg)
	require.NoError(t, err)
	deps := h.deps
	deps.Metrics = met
	s, err := pipeline.NewBatchStage(pipeline.BatchStageConfig{
		Name: "sink", Inputs: []string{h.kafka.Topics.Readings}, DLQ: h.kafka.Topics.ReadingsDLQ,
		Writer: w, MaxBatch: maxBatch, Linger: linger,
	}, deps)
	require.NoError(t, err)
	return s, reg
}

// produceRoundRobin writes n records with values from..from+n-1, spread
// evenly over the topic's partitions.
func (h *harness) produceRoundRobin(t *testing.T, topic string, from, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	// Small produce batches (two records a partition): a fetch of one
	// batch a partition then spans partitions.
	for i := from; i < from+n; i += 12 {
		var recs []*kgo.Record
		for j := i; j < i+12 && j < from+n; j++ {
			recs = append(recs, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(j))})
		}
		require.NoError(t, cl.ProduceSync(context.Background(), recs...).FirstErr())
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// While a write is slow, the stage keeps consuming the next batch (no more
// than MaxBatch records ahead) and writes it the moment the slow write
// ends, without a linger of its own; writes never overlap.
func TestBatchStagePreparesTheNextBatchDuringAWriteIntegration(t *testing.T) {
	const maxBatch, linger = 50, 500 * time.Millisecond
	h := newHarness(t, 3)
	topic := h.kafka.Topics.Readings
	store := newMemStore()
	release := make(chan struct{})
	var writing atomic.Int32
	w := &memWriter{store: store, member: "a", before: func(ctx context.Context, attempt int64, _ []pipeline.Record) error {
		if writing.Add(1) != 1 {
			return errors.New("writes overlap")
		}
		defer writing.Add(-1)
		if attempt == 0 {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}}
	s, reg := newBatchStage(t, h, w, maxBatch, linger)
	h.produceRoundRobin(t, topic, 0, 10)
	stop := runStage(t, s)
	require.Eventually(t, func() bool { return w.attempts.Load() == 1 }, 30*time.Second, 10*time.Millisecond)
	first := 10 // the first poll may hold fewer records; in flight tells
	require.Eventually(t, func() bool { return gauge(t, reg, "stackvps_stage_in_flight_records") == 10 }, 10*time.Second, 10*time.Millisecond)

	h.produceRoundRobin(t, topic, 10, 290)
	// One batch ahead, no more: the batch being written and MaxBatch.
	require.Eventually(t, func() bool {
		return gauge(t, reg, "stackvps_stage_in_flight_records") == float64(first+maxBatch)
	}, 10*time.Second, 10*time.Millisecond)
	time.Sleep(linger + 100*time.Millisecond)
	require.Equal(t, float64(first+maxBatch), gauge(t, reg, "stackvps_stage_in_flight_records"), "never more than one batch ahead")
	released := time.Now()
	close(release)

	require.Eventually(t, func() bool { return store.count() == 300 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())
	store.requireExactlyOnce(t, topic, 300)
	writes := store.writesOf("a")
	require.GreaterOrEqual(t, len(writes), 2)
	require.Len(t, writes[1].recs, maxBatch, "the batch prepared during the slow write is full")
	require.Less(t, writes[1].start.Sub(released), linger, "the prepared batch is written right after the slow one, with no linger")
	for i := 1; i < len(writes); i++ {
		require.False(t, writes[i].start.Before(writes[i-1].end), "writes are sequential")
	}
	require.Equal(t, 300.0, testutil.ToFloat64(counter(t, reg, "stackvps_stage_records_in_total", "sink")))
	require.Zero(t, gauge(t, reg, "stackvps_stage_in_flight_records"))
}

// logWatch is a slog handler that calls on for every record logged.
type logWatch struct {
	on func(slog.Record)
}

func (l logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (l logWatch) Handle(_ context.Context, r slog.Record) error {
	l.on(r)
	return nil
}
func (l logWatch) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logWatch) WithGroup(string) slog.Handler      { return l }

// A member joining takes partitions from a member whose write is in
// progress while its next batch is prepared: the revoke drops the prepared
// records of the partitions that move and waits for the write, so the new
// owner starts at the stored offsets and no record is stored twice or lost.
func TestBatchStageRevokeDropsThePreparedBatchIntegration(t *testing.T) {
	const n = 1200
	h := newHarness(t, 6)
	topic := h.kafka.Topics.Readings
	h.deps.ExtraOpts = []kgo.Opt{kgo.FetchMaxPartitionBytes(1)} // every poll spans partitions
	h.produceRoundRobin(t, topic, 0, n)
	store := newMemStore()

	var (
		mu      sync.Mutex
		dropped int64
		revoked = map[int32]time.Time{} // partition -> when a revoke of it began
	)
	release := make(chan struct{})
	var releaseOnce sync.Once
	h.deps.Log = slog.New(logWatch{on: func(r slog.Record) {
		if r.Message != "partitions gone" {
			return
		}
		var isRevoke bool
		var ps map[string][]int32
		var n int64
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "revoked":
				isRevoke = a.Value.Bool()
			case "partitions":
				ps, _ = a.Value.Any().(map[string][]int32)
			case "dropped_records":
				n = a.Value.Int64()
			}
			return true
		})
		if !isRevoke || len(ps[topic]) == 0 {
			return
		}
		mu.Lock()
		dropped += n
		for _, p := range ps[topic] {
			if _, ok := revoked[p]; !ok {
				revoked[p] = r.Time
			}
		}
		mu.Unlock()
		// The revoke runs while a's write is held: let it end now.
		releaseOnce.Do(func() { close(release) })
	}})
	// a's second write is held until the revoke; were the records the
	// revoke dropped written by a's next write, the check of each write's
	// start against the revoke's time below fails.
	a := &memWriter{store: store, member: "a", before: func(ctx context.Context, attempt int64, _ []pipeline.Record) error {
		if attempt != 1 { // the second write of a, so a batch was written before
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	sa, regA := newBatchStage(t, h, a, 100, 10*time.Millisecond)
	stopA := runStage(t, sa)
	require.Eventually(t, func() bool {
		return a.attempts.Load() == 2 && gauge(t, regA, "stackvps_stage_in_flight_records") > 100
	}, 30*time.Second, 5*time.Millisecond, "a's second write in progress with the next batch pending")

	b := &memWriter{store: store, member: "b"}
	sb, _ := newBatchStage(t, h, b, 100, 10*time.Millisecond)
	stopB := runStage(t, sb)
	require.Eventually(t, func() bool { return store.count() == n }, 120*time.Second, 20*time.Millisecond)
	require.NoError(t, stopA())
	require.NoError(t, stopB())
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, revoked, "b took partitions from a")
	require.Positive(t, dropped, "the revoke dropped prepared records")
	// a stopped first, so partitions taken from a stayed with b: a never
	// wrote them after the revoke began.
	for _, w := range store.writesOf("a") {
		for _, r := range w.recs {
			if at, ok := revoked[r.Partition]; ok {
				require.True(t, w.start.Before(at), "a wrote partition %d (offset %d) after its revoke", r.Partition, r.Offset)
			}
		}
	}
	require.NotEmpty(t, store.writesOf("b"))
	store.requireExactlyOnce(t, topic, n)
}

// A stop drains: the write in progress and what was consumed before the
// stop are written, nothing after; a restart goes on from the stored
// offsets.
func TestBatchStageShutdownDrainsIntegration(t *testing.T) {
	const n = 400
	h := newHarness(t, 2)
	topic := h.kafka.Topics.Readings
	h.produceRoundRobin(t, topic, 0, n)
	store := newMemStore()
	slow := &memWriter{store: store, member: "a", before: func(context.Context, int64, []pipeline.Record) error {
		time.Sleep(100 * time.Millisecond) // not interruptible
		return nil
	}}
	s, reg := newBatchStage(t, h, slow, 30, 10*time.Millisecond)
	stop := runStage(t, s)
	require.Eventually(t, func() bool { return store.count() > 0 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, stop(), "a drain within the timeout is a clean stop")
	stored := store.count()
	require.Less(t, stored, n)
	require.Zero(t, gauge(t, reg, "stackvps_stage_in_flight_records"))
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, stored, store.count(), "nothing written after Run returned")
	require.Equal(t, float64(stored), testutil.ToFloat64(counter(t, reg, "stackvps_stage_records_in_total", "sink")),
		"every record consumed was written")

	s2, _ := newBatchStage(t, h, &memWriter{store: store, member: "b"}, 30, 10*time.Millisecond)
	stop2 := runStage(t, s2)
	require.Eventually(t, func() bool { return store.count() == n }, 60*time.Second, 10*time.Millisecond)
	require.NoError(t, stop2())
	store.requireExactlyOnce(t, topic, n)
}

// Transient errors retry the same batch; dead letters reach the DLQ and the
// offsets move past them; a permanent error stops the stage with nothing of
// its batch stored, and a restart goes on from there.
func TestBatchStageErrorsIntegration(t *testing.T) {
	const n = 200
	h := newHarness(t, 2)
	topic := h.kafka.Topics.Readings
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...))
	require.NoError(t, err)
	for i := range n {
		v := strconv.Itoa(i)
		if i%50 == 7 {
			v = "bad"
		}
		require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(v)}).FirstErr())
	}
	cl.Close()
	store := newMemStore()

	// The database is down for the first three attempts; every attempt
	// carries the same batch.
	var firstBatch []int64
	flaky := &memWriter{store: store, member: "a", before: func(_ context.Context, attempt int64, recs []pipeline.Record) error {
		var offs []int64
		for _, r := range recs {
			offs = append(offs, int64(r.Partition)<<32|r.Offset)
		}
		if attempt == 0 {
			firstBatch = offs
		} else if attempt <= 3 {
			if !slices.Equal(firstBatch, offs) {
				return errors.New("a retry changed the batch")
			}
		}
		if attempt < 3 {
			return pipeline.Transient(errors.New("connection refused"))
		}
		if attempt == 3 {
			// The retry is the same batch: checked above.
			return nil
		}
		if attempt == 5 {
			return errors.New("relation readings does not exist")
		}
		return nil
	}}
	s, reg := newBatchStage(t, h, flaky, 40, 10*time.Millisecond)
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	select {
	case err = <-errc:
	case <-time.After(60 * time.Second):
		t.Fatal("the stage did not stop after a permanent error")
	}
	require.ErrorContains(t, err, "relation readings does not exist")
	require.GreaterOrEqual(t, testutil.ToFloat64(counter(t, reg, "stackvps_stage_retries_total", "sink")), 3.0)
	require.Len(t, store.writesOf("a"), 2, "the retried batch and the one after it")
	before := store.count()

	s2, _ := newBatchStage(t, h, &memWriter{store: store, member: "b"}, 40, 10*time.Millisecond)
	stop := runStage(t, s2)
	require.Eventually(t, func() bool { return store.count() == n-4 }, 60*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())
	require.Greater(t, store.count(), before)
	dead := h.consume(t, h.kafka.Topics.ReadingsDLQ, 5, 5*time.Second)
	require.Len(t, dead, 4, "each bad record dead-lettered once")
	for _, d := range dead {
		require.Equal(t, "bad_record", headers(d)[pipeline.HeaderErrorReason])
	}
	store.mu.Lock()
	var total int64
	for _, o := range store.offsets[topic] {
		total += o
	}
	store.mu.Unlock()
	require.Equal(t, int64(n), total, "the offsets move past dead letters")
}

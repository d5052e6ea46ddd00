package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

type offsets = map[string]map[int32]kgo.EpochOffset

// fakeCommitter records the commits of a commitQueue; failNext makes the
// next commits fail.
type fakeCommitter struct {
	mu       sync.Mutex
	commits  []offsets
	failNext int
	calls    chan offsets
}

func (f *fakeCommitter) commit(_ context.Context, o offsets) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cp := offsets{}
	for t, ps := range o {
		cp[t] = map[int32]kgo.EpochOffset{}
		for p, eo := range ps {
			cp[t][p] = eo
		}
	}
	f.calls <- cp
	if f.failNext > 0 {
		f.failNext--
		return errors.New("coordinator not available")
	}
	f.commits = append(f.commits, cp)
	return nil
}

func newTestQueue(t *testing.T) (*commitQueue, *fakeCommitter, *stageMetrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	met := m.forStage("test")
	f := &fakeCommitter{calls: make(chan offsets, 100)}
	q := newCommitQueue(f.commit, met, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.run(ctx) }()
	t.Cleanup(func() { q.stop(); cancel(); <-done })
	return q, f, met
}

// fetch builds one poll: per partition of topic "in", the offsets of its
// records (leader epoch 3).
func fetch(parts map[int32][]int64) kgo.Fetches {
	ft := kgo.FetchTopic{Topic: "in"}
	for p, offs := range parts {
		fp := kgo.FetchPartition{Partition: p}
		for _, o := range offs {
			fp.Records = append(fp.Records, &kgo.Record{Topic: "in", Partition: p, Offset: o, LeaderEpoch: 3})
		}
		ft.Partitions = append(ft.Partitions, fp)
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{ft}}}
}

func eo(o int64) kgo.EpochOffset { return kgo.EpochOffset{Epoch: 3, Offset: o} }

func noCommit(t *testing.T, f *fakeCommitter) {
	t.Helper()
	select {
	case o := <-f.calls:
		t.Fatalf("unexpected commit %v", o)
	case <-time.After(50 * time.Millisecond):
	}
}

func nextCommit(t *testing.T, f *fakeCommitter) offsets {
	t.Helper()
	select {
	case o := <-f.calls:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no commit")
		return nil
	}
}

func TestCommitQueueCommitsOnlyAfterEveryAckInPollOrder(t *testing.T) {
	q, f, met := newTestQueue(t)
	g1 := q.open(2)
	g1.add()
	g1.add()
	g1.close(q.consumed(fetch(map[int32][]int64{0: {10, 11}}), nil), nil)
	g2 := q.open(3)
	g2.add()
	g2.close(q.consumed(fetch(map[int32][]int64{0: {12}, 1: {5, 6}}), nil), nil)
	require.Equal(t, 5.0, testutil.ToFloat64(met.inFlight))

	g2.ack(nil) // the later poll is complete first: it must wait for g1
	noCommit(t, f)
	g1.ack(nil)
	noCommit(t, f)
	g1.ack(nil)
	first := nextCommit(t, f)
	// Both polls complete: committed together or g1 then g2, never g2 alone.
	if first["in"][1] == (kgo.EpochOffset{}) {
		require.Equal(t, offsets{"in": {0: eo(12)}}, first)
		require.Equal(t, offsets{"in": {0: eo(13), 1: eo(7)}}, nextCommit(t, f))
	} else {
		require.Equal(t, offsets{"in": {0: eo(13), 1: eo(7)}}, first)
	}
	require.NoError(t, q.drain(context.Background()))
	require.Equal(t, 0.0, testutil.ToFloat64(met.inFlight))
}

func TestCommitQueueOpenPollIsNotCommitted(t *testing.T) {
	q, f, _ := newTestQueue(t)
	g := q.open(1)
	g.add()
	g.ack(nil) // every record sent so far is acknowledged, but the poll is still processed
	noCommit(t, f)
	g.close(q.consumed(fetch(map[int32][]int64{2: {0}}), nil), nil)
	require.Equal(t, offsets{"in": {2: eo(1)}}, nextCommit(t, f))
}

func TestCommitQueueProduceFailureBlocksItsCommitAndEveryLaterOne(t *testing.T) {
	q, f, _ := newTestQueue(t)
	g1 := q.open(1)
	g1.add()
	g1.close(q.consumed(fetch(map[int32][]int64{0: {0}}), nil), nil)
	g2 := q.open(1)
	g2.add()
	g2.close(q.consumed(fetch(map[int32][]int64{0: {1}}), nil), nil)
	g3 := q.open(1)
	g3.add()
	g3.close(q.consumed(fetch(map[int32][]int64{0: {2}}), nil), nil)

	g3.ack(nil)
	g2.ack(errors.New("producing to out: MESSAGE_TOO_LARGE"))
	noCommit(t, f)
	g1.ack(nil)
	require.Equal(t, offsets{"in": {0: eo(1)}}, nextCommit(t, f), "the poll before the failure is committed")
	noCommit(t, f)

	err := q.drain(context.Background())
	require.ErrorContains(t, err, "MESSAGE_TOO_LARGE")
	require.ErrorContains(t, q.waitRoom(context.Background(), 100, 100), "MESSAGE_TOO_LARGE", "the stage stops polling")
	// Later polls complete, but nothing after the failure is ever committed.
	g4 := q.open(1)
	g4.close(q.consumed(fetch(map[int32][]int64{0: {3}}), nil), nil)
	noCommit(t, f)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.commits, 1)
}

func TestCommitQueueFailedPollBeforeItsAcksDrainsTheEarlierOnes(t *testing.T) {
	q, f, _ := newTestQueue(t)
	g1 := q.open(1)
	g1.add()
	g1.close(q.consumed(fetch(map[int32][]int64{0: {0}}), nil), nil)
	g2 := q.open(1)
	g2.close(nil, errors.New("processing gave up"))

	errc := make(chan error, 1)
	go func() { errc <- q.drain(context.Background()) }()
	select {
	case err := <-errc:
		t.Fatalf("drain returned %v before the earlier poll was committed", err)
	case <-time.After(50 * time.Millisecond):
	}
	g1.ack(nil)
	require.Equal(t, offsets{"in": {0: eo(1)}}, nextCommit(t, f))
	require.ErrorContains(t, <-errc, "processing gave up")
}

func TestCommitQueueDrainWaitsForAcksWithinItsContext(t *testing.T) {
	q, f, _ := newTestQueue(t)
	g := q.open(1)
	g.add()
	g.close(q.consumed(fetch(map[int32][]int64{0: {7}}), nil), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, q.drain(ctx), context.DeadlineExceeded, "an unacknowledged record is never committed")
	noCommit(t, f)

	errc := make(chan error, 1)
	go func() { errc <- q.drain(context.Background()) }()
	g.ack(nil)
	require.NoError(t, <-errc)
	require.Equal(t, offsets{"in": {0: eo(8)}}, nextCommit(t, f))
}

func TestCommitQueueForgetsRevokedPartitions(t *testing.T) {
	q, f, _ := newTestQueue(t)
	g := q.open(2)
	g.add()
	g.close(q.consumed(fetch(map[int32][]int64{0: {4}, 1: {9}}), nil), nil)
	q.forget(map[string][]int32{"in": {1}}) // lost: partition 1 is no longer ours
	g.ack(nil)
	require.Equal(t, offsets{"in": {0: eo(5)}}, nextCommit(t, f))
}

func TestCommitQueueBackPressure(t *testing.T) {
	q, f, _ := newTestQueue(t)
	ctx := context.Background()
	g1 := q.open(10)
	g1.add()
	g1.close(q.consumed(fetch(map[int32][]int64{0: {0}}), nil), nil)
	g2 := q.open(10)
	g2.close(q.consumed(fetch(map[int32][]int64{0: {1}}), nil), nil)
	require.NoError(t, q.waitRoom(ctx, 3, 100))

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, q.waitRoom(short, 2, 100), context.DeadlineExceeded, "two polls in flight: no room for a third")
	short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	require.ErrorIs(t, q.waitRoom(short2, 100, 20), context.DeadlineExceeded, "20 records in flight: no room")

	room := make(chan error, 1)
	go func() { room <- q.waitRoom(ctx, 2, 20) }()
	g1.ack(nil)
	nextCommit(t, f)
	require.NoError(t, <-room)
}

func TestCommitQueueRetriesAFailedCommit(t *testing.T) {
	q, f, met := newTestQueue(t)
	f.mu.Lock()
	f.failNext = 1
	f.mu.Unlock()
	g1 := q.open(1)
	g1.close(q.consumed(fetch(map[int32][]int64{0: {0}, 1: {0}}), nil), nil)
	require.Equal(t, offsets{"in": {0: eo(1), 1: eo(1)}}, nextCommit(t, f)) // fails
	g2 := q.open(1)
	g2.close(q.consumed(fetch(map[int32][]int64{1: {1}}), nil), nil)
	require.Equal(t, offsets{"in": {0: eo(1), 1: eo(2)}}, nextCommit(t, f), "the next commit covers the failed one")
	require.Equal(t, 1.0, testutil.ToFloat64(met.errTrans))
}

func TestCommitQueueHeldOffsets(t *testing.T) {
	q, f, _ := newTestQueue(t)
	held := map[string]map[int32]int64{"in": {0: 5}}
	g1 := q.open(4)
	g1.close(q.consumed(fetch(map[int32][]int64{0: {3, 4, 5, 6}, 1: {0}}), held), nil)
	require.Equal(t, offsets{"in": {0: {Epoch: -1, Offset: 5}, 1: eo(1)}}, nextCommit(t, f))
	// An idle poll: nothing moved, nothing to commit.
	g2 := q.open(0)
	g2.close(q.consumed(nil, held), nil)
	noCommit(t, f)
	// The window closed: partition 0 is committed up to its head.
	g3 := q.open(0)
	g3.close(q.consumed(nil, map[string]map[int32]int64{}), nil)
	require.Equal(t, offsets{"in": {0: eo(7)}}, nextCommit(t, f))
	require.NoError(t, q.drain(context.Background()))
}

// While nobody waits, polls completing within the interval are committed
// together; a drain does not wait for the interval.
func TestCommitQueueInterval(t *testing.T) {
	q, f, _ := newTestQueue(t)
	q.mu.Lock()
	q.interval = time.Hour
	q.mu.Unlock()
	g1 := q.open(1)
	g1.close(q.consumed(fetch(map[int32][]int64{0: {0}}), nil), nil)
	first := nextCommit(t, f) // the first commit does not wait
	require.Equal(t, offsets{"in": {0: eo(1)}}, first)
	g2 := q.open(1)
	g2.close(q.consumed(fetch(map[int32][]int64{0: {1}}), nil), nil)
	g3 := q.open(1)
	g3.close(q.consumed(fetch(map[int32][]int64{1: {0}}), nil), nil)
	noCommit(t, f)
	require.NoError(t, q.drain(context.Background()), "a drain hurries the committer")
	require.Equal(t, offsets{"in": {0: eo(2), 1: eo(1)}}, nextCommit(t, f), "both polls in one commit")

	g4 := q.open(1)
	g4.close(q.consumed(fetch(map[int32][]int64{1: {1}}), nil), nil)
	noCommit(t, f)
	require.NoError(t, q.waitRoom(context.Background(), 1, 100), "waiting for room hurries it too")
	require.Equal(t, offsets{"in": {1: eo(2)}}, nextCommit(t, f))
}

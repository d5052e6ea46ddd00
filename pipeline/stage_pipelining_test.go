package pipeline_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/pipeline"
)

// A record whose output Kafka refuses stops the stage, and no offset at or
// past it is committed, although later polls were processed and produced
// while its produce was in flight. A restart replays it: nothing is lost.
func TestProduceFailureBlocksTheCommitIntegration(t *testing.T) {
	h := newHarness(t, 1)
	h.deps.Pipeline.MaxPollRecords = 2 // many polls in flight
	h.produce(t, h.kafka.Topics.Raw, 30)
	tooLarge := pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
		if string(r.Value) == "10" {
			// Over the producer's batch limit: refused with MESSAGE_TOO_LARGE.
			return []pipeline.Record{{Key: r.Key, Value: make([]byte, 2<<20)}}, nil
		}
		return []pipeline.Record{{Key: r.Key, Value: r.Value}}, nil
	})
	s, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "fail", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
		DLQ: h.kafka.Topics.RawDLQ, Processor: tooLarge,
	}, h.deps)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	select {
	case err = <-errc:
	case <-time.After(60 * time.Second):
		t.Fatal("the stage did not stop after a produce failure")
	}
	require.ErrorContains(t, err, "MESSAGE_TOO_LARGE")
	committed := h.committedCount(t, "fail")
	require.LessOrEqual(t, committed, int64(10), "never committed past the record whose output failed")
	require.GreaterOrEqual(t, committed, int64(9), "the polls before it are committed")

	// Fixed, the stage replays from the failed record on.
	reg := prometheus.NewRegistry()
	h.deps.Metrics, err = pipeline.NewMetrics(reg)
	require.NoError(t, err)
	echo := pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
		return []pipeline.Record{{Key: r.Key, Value: r.Value}}, nil
	})
	s2, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "fail", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
		DLQ: h.kafka.Topics.RawDLQ, Processor: echo,
	}, h.deps)
	require.NoError(t, err)
	stop := runStage(t, s2)
	require.Eventually(t, func() bool { return h.committedCount(t, "fail") == 30 }, 30*time.Second, 100*time.Millisecond)
	require.NoError(t, stop())
	seen := map[string]bool{}
	for _, r := range h.consume(t, h.kafka.Topics.Readings, 30, 10*time.Second) {
		seen[string(r.Value)] = true
	}
	for i := range 30 {
		require.True(t, seen[strconv.Itoa(i)], "record %d lost", i)
	}
}

// A member joining mid-stream takes partitions from a member with polls in
// flight: the revoke commits them first, so the new owner starts exactly
// where the old one stopped (no record twice), and the old member's later
// commits never name the partitions it gave away.
func TestRebalanceDrainsPollsInFlightIntegration(t *testing.T) {
	const n = 1200
	h := newHarness(t, 6)
	h.deps.Pipeline.MaxPollRecords = 200
	// Acks take a while: polls are in flight when the rebalance comes
	// (without the drain on revoke, this test sees duplicates).
	h.deps.ExtraOpts = []kgo.Opt{kgo.ProducerLinger(300 * time.Millisecond), kgo.FetchMaxPartitionBytes(1)}
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	require.NoError(t, err)
	// Small batches, fetched one per partition at a time: every poll
	// holds records of every partition.
	for i := 0; i < n; i += 12 {
		var recs []*kgo.Record
		for j := i; j < i+12 && j < n; j++ {
			recs = append(recs, &kgo.Record{Topic: h.kafka.Topics.Raw, Value: []byte(strconv.Itoa(j))})
		}
		require.NoError(t, cl.ProduceSync(context.Background(), recs...).FirstErr())
	}
	cl.Close()

	var processed atomic.Int64
	slow := pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
		time.Sleep(500 * time.Microsecond)
		processed.Add(1)
		return []pipeline.Record{{Key: r.Key, Value: r.Value}}, nil
	})
	newStage := func() *pipeline.Stage {
		met, err := pipeline.NewMetrics(prometheus.NewRegistry())
		require.NoError(t, err)
		deps := h.deps
		deps.Metrics = met
		s, err := pipeline.NewStage(pipeline.StageConfig{
			Name: "rebal", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
			DLQ: h.kafka.Topics.RawDLQ, Processor: slow,
		}, deps)
		require.NoError(t, err)
		return s
	}
	stopA := runStage(t, newStage())
	require.Eventually(t, func() bool { return processed.Load() > 300 }, 30*time.Second, 5*time.Millisecond)
	stopB := runStage(t, newStage())
	require.Eventually(t, func() bool { return h.committedCount(t, "rebal") == n }, 120*time.Second, 100*time.Millisecond)
	require.NoError(t, stopA())
	require.NoError(t, stopB())

	out := h.consume(t, h.kafka.Topics.Readings, n+1, 3*time.Second)
	seen := map[string]int{}
	var twice []string
	for _, r := range out {
		seen[string(r.Value)]++
		if seen[string(r.Value)] == 2 {
			twice = append(twice, string(r.Value))
		}
	}
	require.Len(t, seen, n, "every record arrives")
	require.Empty(t, twice, "records processed twice across the rebalance: %s", strings.Join(twice, ","))
	require.Equal(t, int64(n), processed.Load())
}

// Each partition's records are processed and produced in order, although
// partitions are processed by workers of their own while the stage polls
// on: the outputs of every key (one input partition) keep the input order.
func TestPartitionOrderAcrossPollsIntegration(t *testing.T) {
	const n = 600
	h := newHarness(t, 4)
	h.deps.Pipeline.MaxPollRecords = 3 // many polls in flight
	h.produce(t, h.kafka.Topics.Raw, n)
	var calls atomic.Int64
	proc := pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
		if calls.Add(1)%7 == 0 {
			time.Sleep(time.Millisecond) // uneven work across partitions
		}
		return []pipeline.Record{{Key: r.Key, Value: r.Value}}, nil
	})
	s, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "order", Inputs: []string{h.kafka.Topics.Raw}, Output: h.kafka.Topics.Readings,
		DLQ: h.kafka.Topics.RawDLQ, Processor: proc,
	}, h.deps)
	require.NoError(t, err)
	stop := runStage(t, s)
	require.Eventually(t, func() bool { return h.committedCount(t, "order") == n }, 60*time.Second, 100*time.Millisecond)
	require.NoError(t, stop())
	out := h.consume(t, h.kafka.Topics.Readings, n, 10*time.Second)
	require.Len(t, out, n)
	last := map[string]int{}
	for _, r := range out {
		v, err := strconv.Atoi(string(r.Value))
		require.NoError(t, err)
		if prev, ok := last[string(r.Key)]; ok {
			require.Greater(t, v, prev, "key %s: %d after %d", r.Key, v, prev)
		}
		last[string(r.Key)] = v
	}
}

package rig

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
)

// Admin returns an admin client on k's brokers; close it with Close.
func Admin(k config.Kafka) (*kadm.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.ClientID(k.ClientID+"-bench-admin"))
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// EndOffsets returns the sum of topic's partition end offsets: the records
// it holds (the producers are idempotent, not transactional, so there are no
// control records).
func EndOffsets(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	offs, err := PartitionEnds(ctx, adm, topic)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, o := range offs {
		sum += o
	}
	return sum, nil
}

// PartitionEnds returns topic's end offset per partition.
func PartitionEnds(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	l, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := l.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// WaitEndOffsets polls topic every interval until it holds at least want
// records and returns the time of the poll that saw them, so the resolution
// is interval plus one ListOffsets round trip (about a millisecond on
// loopback).
func WaitEndOffsets(ctx context.Context, adm *kadm.Client, topic string, want int64, interval time.Duration) (time.Time, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last int64
	for {
		n, err := EndOffsets(ctx, adm, topic)
		if err == nil && n >= want {
			return time.Now(), nil
		}
		if err == nil {
			last = n
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s holds %d records, waiting for %d: %w", topic, last, want, ctx.Err())
		case <-t.C:
		}
	}
}

// EnsureTopic creates topic with partitions partitions unless it exists.
func EnsureTopic(ctx context.Context, k config.Kafka, topic string, partitions int) error {
	_, err := pipeline.EnsureTopics(ctx, k, []pipeline.TopicSpec{{Name: topic, Partitions: int32(partitions), ReplicationFactor: -1}})
	return err
}

// Produce writes recs to Kafka with the pipeline's producer settings and
// waits for every acknowledgement.
func Produce(ctx context.Context, k config.Kafka, recs []pipeline.Record) error {
	cl, err := kgo.NewClient(append(pipeline.ProducerOpts(k), kgo.SeedBrokers(k.Brokers...), kgo.ClientID(k.ClientID+"-bench-producer"))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var failed atomic.Pointer[error]
	for _, r := range recs {
		cl.Produce(ctx, toKgo(r), func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}

func toKgo(r pipeline.Record) *kgo.Record {
	kr := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Timestamp: r.Time}
	for _, h := range r.Headers {
		kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return kr
}

// Relay is the raw limit of a consume -> process -> produce stage: a bare
// franz-go consumer-group member that reads topic in from the start (the
// fetch settings of a pipeline stage: a fresh group, read_committed, polls of
// at most maxPoll records) and produces, with the pipeline's producer
// settings (pipeline.ProducerOpts), for every record consumed the records
// outputs returns for it to out; nil outputs produces each record unchanged
// (key, value, headers, timestamp). Unlike a stage it does no work on a
// record beyond looking its outputs up, does not wait for acknowledgements
// between polls and commits nothing: it is the fastest a client on this
// machine moves these records. It returns once want records were produced
// and acknowledged, or ctx ends.
func Relay(ctx context.Context, k config.Kafka, group, in, out string, want int64, maxPoll int, outputs func(*kgo.Record) []pipeline.Record) error {
	opts := append(pipeline.ProducerOpts(k),
		kgo.SeedBrokers(k.Brokers...),
		kgo.ClientID(k.ClientID+"-bench-relay"),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(in),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var (
		produced int64
		failed   atomic.Pointer[error]
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.CompareAndSwap(nil, &err)
		}
	}
	for produced < want {
		fs := cl.PollRecords(ctx, maxPoll)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if produced >= want {
				return
			}
			if outputs == nil {
				produced++
				cl.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}, promise)
				return
			}
			for _, o := range outputs(r) {
				produced++
				kr := toKgo(o)
				kr.Topic = out
				cl.Produce(ctx, kr, promise)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}

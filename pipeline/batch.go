package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A BatchWriter stores batches of records in an external system (a
// database) together with, in the same transaction, the next offset of every
// partition it consumed. The stage seeks to those stored offsets whenever it
// is assigned partitions, so no crash, restart or rebalance can lose a record
// or store one twice: exactly-once effect without distributed transactions.
type BatchWriter interface {
	// Offsets returns the stored next offset of each listed partition of
	// topic for the group. A partition with nothing stored is left out; it
	// then starts at the group's committed offset, or the topic's start.
	Offsets(ctx context.Context, group, topic string, partitions []int32) (map[int32]int64, error)
	// Write stores recs and, atomically with them, next[topic][partition]
	// (the offset after the last record of each partition in recs). A record
	// it cannot store for a permanent reason (it does not decode, a value the
	// store refuses) is handed to dead, which returns once the dead letter is
	// acknowledged by Kafka, and left out; the offsets still move past it. A
	// transient error (the store is down) must leave nothing stored and be
	// marked with Transient: the stage retries the same batch with backoff.
	// Any other error stops the stage, with nothing stored.
	Write(ctx context.Context, group string, recs []Record, next map[string]map[int32]int64, dead DeadLetterFunc) error
}

// DeadLetterFunc sends rec to the stage's dead-letter topic with err as the
// reason and returns once Kafka acknowledged it.
type DeadLetterFunc func(ctx context.Context, rec Record, err error) error

// BatchStageConfig describes a batch stage.
type BatchStageConfig struct {
	// Name names the stage in metrics, logs and its consumer group.
	Name string
	// Inputs are the topics consumed.
	Inputs []string
	// DLQ receives records the writer gives up on. Required.
	DLQ string
	// Writer stores the batches. Required.
	Writer BatchWriter
	// MaxBatch caps the records of one write. Default pipeline.max_poll_records.
	MaxBatch int
	// Linger is how long to wait for a batch to fill after its first
	// record. Default 100ms.
	Linger time.Duration
}

// BatchStage consumes records, hands them to a BatchWriter in batches, and
// lets the writer keep the offsets. See BatchWriter for the guarantees.
type BatchStage struct {
	core
	cfg BatchStageConfig
}

// NewBatchStage validates cfg and creates the stage's Kafka client.
func NewBatchStage(cfg BatchStageConfig, deps Deps) (*BatchStage, error) {
	missing := ""
	if cfg.Writer == nil {
		missing = "writer"
	}
	c, err := newCore(cfg.Name, cfg.Inputs, cfg.DLQ, missing, deps)
	if err != nil {
		return nil, err
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = deps.Pipeline.MaxPollRecords
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 100 * time.Millisecond
	}
	s := &BatchStage{core: c, cfg: cfg}
	if s.cl, err = newConsumer(cfg.Name, s.group, cfg.Inputs, deps, s.log, kgo.AdjustFetchOffsetsFn(s.adjustOffsets)); err != nil {
		return nil, err
	}
	return s, nil
}

// adjustOffsets replaces the group's committed offsets with the ones the
// writer stored with its data, on every assignment.
func (s *BatchStage) adjustOffsets(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for topic, parts := range assigned {
		ids := make([]int32, 0, len(parts))
		for p := range parts {
			ids = append(ids, p)
		}
		var stored map[int32]int64
		for attempt := 0; ; attempt++ {
			var err error
			stored, err = s.cfg.Writer.Offsets(ctx, s.group, topic, ids)
			if err == nil {
				break
			}
			// Without the stored offsets the stage must not consume: it
			// could write rows twice or skip some.
			s.log.Warn("reading stored offsets failed; retrying", "topic", topic, "attempt", attempt+1, "err", err)
			if werr := s.backoff.Wait(ctx, attempt); werr != nil {
				return nil, fmt.Errorf("reading stored offsets of %s: %w", topic, err)
			}
		}
		for p, next := range stored {
			parts[p] = kgo.NewOffset().At(next).WithEpoch(-1)
		}
		s.log.Info("partitions assigned", "topic", topic, "partitions", ids, "stored_offsets", stored)
	}
	return assigned, nil
}

// Run consumes until ctx is done; the batch in progress is finished within
// pipeline.shutdown_timeout. It returns nil after a clean stop.
func (s *BatchStage) Run(ctx context.Context) (err error) {
	drain, stopDrain := s.drainContext(ctx)
	defer stopDrain()
	defer func() {
		s.met.ready.Set(0)
		s.cl.Close()
		s.log.Info("stage stopped", "err", err)
	}()
	s.log.Info("stage started", "inputs", s.cfg.Inputs, "group", s.group, "max_batch", s.cfg.MaxBatch)
	for ctx.Err() == nil {
		recs, healthy := s.poll(ctx)
		s.met.ready.Set(boolGauge(healthy))
		if len(recs) == 0 {
			s.cl.AllowRebalance()
			continue
		}
		if err := s.write(drain, recs); err != nil {
			s.cl.AllowRebalance()
			if drain.Err() != nil {
				return fmt.Errorf("stage %s: shutdown timeout passed with a batch in progress; nothing of it was stored and it will be replayed: %w", s.cfg.Name, err)
			}
			return fmt.Errorf("stage %s: %w", s.cfg.Name, err)
		}
		s.cl.AllowRebalance()
	}
	return nil
}

// poll gathers up to MaxBatch records, waiting at most Linger after the
// first one arrives.
func (s *BatchStage) poll(ctx context.Context) ([]*kgo.Record, bool) {
	var recs []*kgo.Record
	healthy := true
	deadline := time.Now().Add(time.Second)
	for len(recs) < s.cfg.MaxBatch {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		f := s.cl.PollRecords(pctx, s.cfg.MaxBatch-len(recs))
		cancel()
		if f.IsClientClosed() {
			return recs, healthy
		}
		f.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			healthy = false
			s.log.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
		})
		f.EachPartition(func(p kgo.FetchTopicPartition) {
			if n := len(p.Records); n > 0 && p.HighWatermark > 0 {
				s.met.setLag(p.Topic, strconv.Itoa(int(p.Partition)), max(0, p.HighWatermark-p.Records[n-1].Offset-1))
			}
		})
		if len(recs) == 0 && f.NumRecords() > 0 {
			deadline = time.Now().Add(s.cfg.Linger)
		}
		recs = append(recs, f.Records()...)
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
	}
	return recs, healthy
}

func (s *BatchStage) write(ctx context.Context, krecs []*kgo.Record) error {
	n := len(krecs)
	s.met.recordsIn.Add(float64(n))
	s.met.batch.Observe(float64(n))
	s.met.inFlight.Add(float64(n))
	defer s.met.inFlight.Sub(float64(n))
	recs := make([]Record, n)
	next := map[string]map[int32]int64{}
	for i, kr := range krecs {
		recs[i] = fromKgo(kr)
		if next[kr.Topic] == nil {
			next[kr.Topic] = map[int32]int64{}
		}
		if o := kr.Offset + 1; o > next[kr.Topic][kr.Partition] {
			next[kr.Topic][kr.Partition] = o
		}
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := s.cfg.Writer.Write(ctx, s.group, recs, next, s.deadLetter)
		if err == nil {
			break
		}
		if !IsTransient(err) || ctx.Err() != nil {
			s.met.errPerm.Inc()
			return fmt.Errorf("writing %d records: %w", n, err)
		}
		s.met.errTrans.Inc()
		s.met.retries.Inc()
		if attempt == 0 || attempt%10 == 0 {
			s.log.Warn("transient error writing a batch, retrying", "records", n, "attempt", attempt+1, "err", err)
		}
		if werr := s.backoff.Wait(ctx, attempt); werr != nil {
			return fmt.Errorf("retrying after %w: %w", err, werr)
		}
	}
	s.met.commit.Observe(time.Since(start).Seconds())
	for _, kr := range krecs {
		if !kr.Timestamp.IsZero() {
			s.met.endToEnd.Observe(time.Since(kr.Timestamp).Seconds())
		}
	}
	// The stored offsets are the truth; committing them to the group as
	// well keeps standard tools (rpk group describe, kcat) showing the lag.
	s.cl.CommitRecords(context.WithoutCancel(ctx), krecs...)
	return nil
}

func (s *BatchStage) deadLetter(ctx context.Context, rec Record, err error) error {
	reason := Reason(err)
	s.log.Warn("dead-lettering record", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "reason", reason, "err", err)
	dl := deadLetterRecord(rec, s.cfg.Name, s.cfg.DLQ, err, reason)
	if perr := s.cl.ProduceSync(ctx, toKgo(dl, s.cfg.DLQ)).FirstErr(); perr != nil {
		return Transient(fmt.Errorf("producing dead letter to %s: %w", s.cfg.DLQ, perr))
	}
	s.met.out(s.cfg.DLQ, 1)
	s.met.dead(reason)
	return nil
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
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
//
// Polling overlaps writing: a poller goroutine consumes into the pending
// records while the writer (Run's goroutine) writes the batch before them,
// so that when a write ends the next batch is ready and written at once.
// A batch is due when MaxBatch records are pending or Linger passed since
// the first of them; while a write takes longer, the next batch keeps
// filling up to MaxBatch. The poller stops at MaxBatch pending records, so
// at most two batches are held: the one being written and the next. Writes
// are sequential and in consumption order.
//
// Rebalances: the poller lets the group rebalance after every poll, once the
// poll's records are pending. When partitions are revoked their pending
// records are dropped (the writer never stored them, so their new owner,
// which starts at the stored offsets, reads them again) and the callback
// waits, within pipeline.shutdown_timeout, for the write in progress, which
// stores their offsets. When partitions are lost (the session ended) their
// pending records are dropped without waiting. Either way, the records of
// those partitions still in the batch being written are left out of its
// later attempts.
type BatchStage struct {
	core
	cfg BatchStageConfig

	// mu guards what the poller, the writer and the group's callbacks
	// share: the fields below and writeBatch.gone.
	mu sync.Mutex
	// pending are the records consumed and not handed to the writer yet,
	// in consumption order; since is when the first of them arrived.
	pending []*kgo.Record
	since   time.Time
	// writing is the batch being written; nil between writes.
	writing *writeBatch
	// changed is closed and replaced whenever pending or writing change.
	changed chan struct{}
}

// writeBatch is one batch handed to the writer.
type writeBatch struct {
	recs []*kgo.Record
	// gone names the partitions this member gave up while the batch was
	// being written (a lost session, or a revoke that did not wait for the
	// write to end): later attempts leave their records out, since their
	// new owner reads them again. Under BatchStage.mu.
	gone    map[topicPartition]bool
	goneVer int
	// done is closed when the write ends, stored or given up.
	done chan struct{}
}

type topicPartition struct {
	topic     string
	partition int32
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
	s := &BatchStage{core: c, cfg: cfg, changed: make(chan struct{})}
	if s.cl, err = newConsumer(cfg.Name, s.group, cfg.Inputs, deps, s.log,
		kgo.AdjustFetchOffsetsFn(s.adjustOffsets),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { s.partitionsGone(ps, true) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { s.partitionsGone(ps, false) }),
	); err != nil {
		return nil, err
	}
	return s, nil
}

// adjustOffsets replaces the group's committed offsets with the ones the
// writer stored with its data, on every assignment. A write in progress may
// still store offsets of the assigned partitions (they were this member's
// before a lost session, or a revoke that timed out), so it is waited for
// first, within pipeline.shutdown_timeout.
func (s *BatchStage) adjustOffsets(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	if err := s.waitWrite(ctx); err != nil {
		return nil, fmt.Errorf("waiting for the write in progress before reading stored offsets: %w", err)
	}
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

// waitWrite waits until no write is in progress, at most
// pipeline.shutdown_timeout; past it, it returns nil (the stored offsets
// only move forward and the writer merges rows stored twice, so reading
// them early costs a replay, not a duplicate).
func (s *BatchStage) waitWrite(ctx context.Context) error {
	s.mu.Lock()
	b := s.writing
	s.mu.Unlock()
	if b == nil {
		return nil
	}
	t := time.NewTimer(s.deps.Pipeline.ShutdownTimeout.Std())
	defer t.Stop()
	select {
	case <-b.done:
	case <-t.C:
		s.log.Warn("a write is still in progress after pipeline.shutdown_timeout; reading the stored offsets anyway")
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// partitionsGone runs in the group's goroutine when partitions are revoked
// (rebalance, leaving the group) or lost (session ended). It drops their
// pending records; on a revoke it then waits, within
// pipeline.shutdown_timeout, for the write in progress, so that the next
// owner reads the offsets it stores. The poller cannot poll meanwhile
// (BlockRebalanceOnPoll), and the writer's next batch is taken from the
// pending records already filtered, so once this returns no write of this
// member holds a record of the partitions, except a late attempt of a write
// that outlived the wait (or a lost session's), which the unique key merges.
func (s *BatchStage) partitionsGone(ps map[string][]int32, revoked bool) {
	gone := map[topicPartition]bool{}
	for topic, parts := range ps {
		for _, p := range parts {
			gone[topicPartition{topic, p}] = true
		}
	}
	if len(gone) == 0 {
		return
	}
	s.mu.Lock()
	kept := s.pending[:0]
	for _, kr := range s.pending {
		if !gone[topicPartition{kr.Topic, kr.Partition}] {
			kept = append(kept, kr)
		}
	}
	dropped := len(s.pending) - len(kept)
	clear(s.pending[len(kept):])
	s.pending = kept
	b := s.writing
	if b != nil && !revoked {
		b.forget(gone)
	}
	s.notifyLocked()
	s.mu.Unlock()
	s.met.inFlight.Sub(float64(dropped))
	s.log.Info("partitions gone", "revoked", revoked, "partitions", ps, "dropped_records", dropped, "writing", b != nil)
	if !revoked || b == nil {
		return
	}
	t := time.NewTimer(s.deps.Pipeline.ShutdownTimeout.Std())
	defer t.Stop()
	select {
	case <-b.done:
	case <-t.C:
		s.mu.Lock()
		b.forget(gone)
		s.mu.Unlock()
		s.log.Warn("partitions revoked before the write in progress ended; its later attempts leave them out and their new owner replays them")
	}
}

// forget adds gone to the partitions b leaves out. Call with s.mu held.
func (b *writeBatch) forget(gone map[topicPartition]bool) {
	if b.gone == nil {
		b.gone = map[topicPartition]bool{}
	}
	for tp := range gone {
		b.gone[tp] = true
	}
	b.goneVer++
}

func (s *BatchStage) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Run consumes until ctx is done, then stops polling and writes what was
// consumed, the write in progress included, within
// pipeline.shutdown_timeout. It returns nil after a clean stop, or the
// error that stopped it (a permanent write error: nothing of that batch
// was stored).
func (s *BatchStage) Run(ctx context.Context) (err error) {
	drain, stopDrain := s.drainContext(ctx)
	defer stopDrain()
	pollCtx, cancelPoll := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		s.pollLoop(pollCtx)
	}()
	stopPolling := sync.OnceFunc(func() { cancelPoll(); <-polled })
	defer func() {
		stopPolling()
		s.mu.Lock()
		left := len(s.pending)
		s.pending = nil
		s.mu.Unlock()
		s.met.inFlight.Sub(float64(left))
		s.met.ready.Set(0)
		// Close leaves the group; the revoke it triggers finds no write
		// in progress.
		s.cl.Close()
		s.log.Info("stage stopped", "err", err)
	}()
	s.log.Info("stage started", "inputs", s.cfg.Inputs, "group", s.group, "max_batch", s.cfg.MaxBatch, "linger", s.cfg.Linger)
	for {
		b := s.next(ctx)
		if b == nil {
			break
		}
		if werr := s.write(drain, b); werr != nil {
			return s.stopped(drain, werr)
		}
	}
	// Stopped polling, what is pending was consumed before the stop:
	// write it too, as the old member would have, rather than replay it.
	stopPolling()
	for {
		b := s.take(0)
		if b == nil {
			return nil
		}
		if werr := s.write(drain, b); werr != nil {
			return s.stopped(drain, werr)
		}
	}
}

func (s *BatchStage) stopped(drain context.Context, err error) error {
	if drain.Err() != nil {
		return fmt.Errorf("stage %s: shutdown timeout passed with a batch in progress; nothing of it was stored and it will be replayed: %w", s.cfg.Name, err)
	}
	return fmt.Errorf("stage %s: %w", s.cfg.Name, err)
}

// pollLoop consumes into the pending records until ctx is done, keeping at
// most MaxBatch of them. It lets the group rebalance after every poll.
func (s *BatchStage) pollLoop(ctx context.Context) {
	for {
		room, err := s.waitRoom(ctx)
		if err != nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		f := s.cl.PollRecords(pctx, room)
		cancel()
		if f.IsClientClosed() {
			s.cl.AllowRebalance()
			return
		}
		healthy := true
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
		s.met.ready.Set(boolGauge(healthy))
		if recs := f.Records(); len(recs) > 0 {
			s.met.inFlight.Add(float64(len(recs)))
			s.mu.Lock()
			if len(s.pending) == 0 {
				s.since = time.Now()
			}
			s.pending = append(s.pending, recs...)
			s.notifyLocked()
			s.mu.Unlock()
		}
		// The records are pending: a revoke from here on drops those of
		// its partitions.
		s.cl.AllowRebalance()
		if ctx.Err() != nil {
			return
		}
	}
}

// waitRoom waits until fewer than MaxBatch records are pending and returns
// how many more the poller may take.
func (s *BatchStage) waitRoom(ctx context.Context) (int, error) {
	for {
		s.mu.Lock()
		room := s.cfg.MaxBatch - len(s.pending)
		ch := s.changed
		s.mu.Unlock()
		if room > 0 {
			return room, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// next waits until a batch is due (MaxBatch records pending, or Linger
// passed since the first) and takes it; nil once ctx is done.
func (s *BatchStage) next(ctx context.Context) *writeBatch {
	for {
		if b := s.take(s.cfg.Linger); b != nil {
			return b
		}
		s.mu.Lock()
		ch, wait := s.changed, time.Duration(-1)
		if len(s.pending) > 0 {
			wait = s.cfg.Linger - time.Since(s.since)
		}
		s.mu.Unlock()
		var t *time.Timer
		var timeout <-chan time.Time
		if wait >= 0 {
			t = time.NewTimer(wait)
			timeout = t.C
		}
		select {
		case <-ch:
		case <-timeout:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// take hands the pending records (never more than MaxBatch: the poller
// stops there) to the writer as a batch if there are MaxBatch of them or
// linger passed since the first; nil if not.
func (s *BatchStage) take(linger time.Duration) *writeBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.pending)
	if n == 0 || (n < s.cfg.MaxBatch && time.Since(s.since) < linger) {
		return nil
	}
	b := &writeBatch{recs: s.pending, done: make(chan struct{})}
	s.pending = nil
	s.writing = b
	s.notifyLocked()
	return b
}

// finish ends b's write.
func (s *BatchStage) finish(b *writeBatch) {
	s.mu.Lock()
	s.writing = nil
	s.notifyLocked()
	s.mu.Unlock()
	close(b.done)
	s.met.inFlight.Sub(float64(len(b.recs)))
}

// owned returns b's records of the partitions this member still owns if
// that changed since version ver, and the current version.
func (s *BatchStage) owned(b *writeBatch, ver int) ([]*kgo.Record, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.goneVer == ver {
		return nil, ver, false
	}
	kept := make([]*kgo.Record, 0, len(b.recs))
	for _, kr := range b.recs {
		if !b.gone[topicPartition{kr.Topic, kr.Partition}] {
			kept = append(kept, kr)
		}
	}
	return kept, b.goneVer, true
}

// write stores b, retrying transient errors with backoff until ctx ends.
func (s *BatchStage) write(ctx context.Context, b *writeBatch) error {
	defer s.finish(b)
	krecs := b.recs
	n := len(krecs)
	s.met.recordsIn.Add(float64(n))
	s.met.batch.Observe(float64(n))
	recs, next := batchRecords(krecs)
	start := time.Now()
	ver := 0
	for attempt := 0; ; attempt++ {
		if kept, v, changed := s.owned(b, ver); changed {
			krecs, ver = kept, v
			recs, next = batchRecords(krecs)
			if len(krecs) == 0 {
				// Every partition of the batch went to another member.
				return nil
			}
		}
		err := s.cfg.Writer.Write(ctx, s.group, recs, next, s.deadLetter)
		if err == nil {
			break
		}
		if !IsTransient(err) || ctx.Err() != nil {
			s.met.errPerm.Inc()
			return fmt.Errorf("writing %d records: %w", len(recs), err)
		}
		s.met.errTrans.Inc()
		s.met.retries.Inc()
		if attempt == 0 || attempt%10 == 0 {
			s.log.Warn("transient error writing a batch, retrying", "records", len(recs), "attempt", attempt+1, "err", err)
		}
		if werr := s.backoff.Wait(ctx, attempt); werr != nil {
			return fmt.Errorf("retrying after %w: %w", err, werr)
		}
	}
	now := time.Now()
	s.met.commit.Observe(now.Sub(start).Seconds())
	for _, kr := range krecs {
		if !kr.Timestamp.IsZero() {
			s.met.endToEnd.Observe(now.Sub(kr.Timestamp).Seconds())
		}
	}
	// The stored offsets are the truth; committing them to the group as
	// well keeps standard tools (rpk group describe, kcat) showing the lag.
	// Before done is closed, so a revoke that waits for this write finds
	// the group commit made too.
	if err := s.cl.CommitRecords(context.WithoutCancel(ctx), krecs...); err != nil {
		s.log.Debug("committing the stored offsets to the group failed; the stored offsets stay the truth", "err", err)
	}
	return nil
}

// batchRecords converts krecs for the writer and returns, per topic and
// partition, the offset after the last of them.
func batchRecords(krecs []*kgo.Record) ([]Record, map[string]map[int32]int64) {
	recs := make([]Record, len(krecs))
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
	return recs, next
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

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/stackvps/stackvps/config"
)

// A Processor turns one record into zero or more records. A permanent error
// (bad payload, unknown device) sends rec to the stage's DLQ with the reason in
// the "error" header; a transient one (database or regulator down, see
// Transient) is retried with backoff and never goes to the DLQ. Neither stops
// the stage. Process must be safe for concurrent use across partitions (the
// runtime calls it for one partition's records in order) and must not retain
// rec.
type Processor interface {
	Process(ctx context.Context, rec Record) ([]Record, error)
}

// ProcessorFunc adapts a function to Processor.
type ProcessorFunc func(ctx context.Context, rec Record) ([]Record, error)

// Process calls f.
func (f ProcessorFunc) Process(ctx context.Context, rec Record) ([]Record, error) { return f(ctx, rec) }

// A Flusher is a windowed stage; the runtime calls Flush after processing
// each poll, and at least every FlushInterval when idle, with the time of the
// call as the processing-time watermark. Records Flush returns are produced
// and acknowledged before the poll's offsets are committed. Errors are
// handled as Process errors, without a record to dead-letter: a permanent one
// is logged and counted.
type Flusher interface {
	Flush(ctx context.Context, watermark time.Time) ([]Record, error)
}

// An OffsetHolder is a processor that keeps consumed records in state not
// yet reflected downstream (open windows). The runtime commits each partition
// no further than the offset HeldOffsets names, so after a crash the records
// needed to rebuild that state are consumed again; the processor must then
// emit idempotently (same key, same value). Called after Flush, once per
// poll, before the next poll.
type OffsetHolder interface {
	// HeldOffsets returns, per topic and partition, the lowest offset the
	// state still needs; a partition that is absent holds nothing back.
	HeldOffsets() map[string]map[int32]int64
}

// A PartitionDropper is told when the stage loses partitions (rebalance,
// session loss), so it can drop their state: the next owner rebuilds it from
// the committed offsets. On a rebalance it is called after the offsets of
// every poll in flight were committed.
type PartitionDropper interface {
	DropPartitions(partitions map[string][]int32)
}

// StageConfig describes one Kafka stage.
type StageConfig struct {
	// Name names the stage in metrics, logs and its consumer group
	// ("<group_prefix>-<name>").
	Name string
	// Inputs are the topics consumed.
	Inputs []string
	// Output is where records go whose Topic is empty. It may be empty for a
	// stage that only writes elsewhere (a sink).
	Output string
	// DLQ receives permanent failures. Required.
	DLQ string
	// Processor does the work. Required.
	Processor Processor
	// FlushInterval is how often an idle Flusher is flushed. Default 1s.
	FlushInterval time.Duration
}

// Deps are what a stage needs from the process.
type Deps struct {
	Kafka    config.Kafka
	Pipeline config.Pipeline
	Metrics  *Metrics
	Health   *Health
	Log      *slog.Logger
	// ExtraOpts are appended to the client's options (tests use them to
	// shorten timeouts or point at kfake).
	ExtraOpts []kgo.Opt
}

// Stage runs one Processor as a Kafka consumer group member:
// consume -> process -> produce -> commit.
//
// Polls are pipelined: once a poll is processed (its outputs handed to the
// producer) the stage polls again, while a committer commits each poll's
// offsets once every record produced for it, and for every poll before it,
// is acknowledged (at most one commit per commitInterval, several polls
// at once, unless a drain or the poll loop waits for one). Commits are in
// poll order, so an offset is never committed past a record whose outputs
// are not all in Kafka; a produce failure stops every later commit and the
// stage. At most maxInFlightPolls
// polls and maxInFlightFactor × pipeline.max_poll_records consumed records
// are in flight (not committed yet); the stage waits before polling beyond
// that. A rebalance commits everything in flight before the partitions go.
type Stage struct {
	core
	cfg     StageConfig
	commits *commitQueue
	// outCounters caches recordsOut's child per topic (produce callbacks
	// run once per output record).
	outCounters sync.Map // topic -> prometheus.Counter
	maxPolls    int
	maxRecords  int
}

// fetchMaxPartitionBytes bounds what one fetch takes from a partition.
const fetchMaxPartitionBytes = 256 << 10

// Bounds of the work in flight: polls processed but not committed yet.
// A poll's acknowledgements take longer than processing the next one (a
// backlog of 5,000-record polls, each producing 15,000 readings: 45-70 ms
// against ~35 ms), so two polls in flight left the stage waiting for acks
// 10 % of the time; at eight, the producer's own buffer (franz-go's
// MaxBufferedRecords, 50,000 records) is the bound that applies first.
// A crash replays at most this much: stages are at-least-once, and each
// says in its package doc why a replay stores nothing twice.
const (
	maxInFlightPolls  = 16
	maxInFlightFactor = 8
	// commitInterval is the least time between two commits, unless a
	// drain or the poll loop waits for one.
	commitInterval = 100 * time.Millisecond
)

// core is what every consuming stage has: its client, metrics, logger,
// backoff and consumer group.
type core struct {
	deps    Deps
	cl      *kgo.Client
	met     *stageMetrics
	log     *slog.Logger
	backoff Backoff
	group   string
}

// newCore validates what every consuming stage needs; missing names the
// processor or writer the stage lacks ("" when it has it).
func newCore(name string, inputs []string, dlq, missing string, deps Deps) (core, error) {
	switch {
	case name == "":
		return core{}, errors.New("stage: name is required")
	case len(inputs) == 0:
		return core{}, fmt.Errorf("stage %s: at least one input topic is required", name)
	case dlq == "":
		return core{}, fmt.Errorf("stage %s: a dead-letter topic is required", name)
	case missing != "":
		return core{}, fmt.Errorf("stage %s: a %s is required", name, missing)
	case deps.Metrics == nil || deps.Health == nil || deps.Log == nil:
		return core{}, fmt.Errorf("stage %s: metrics, health and log are required", name)
	}
	return core{
		deps:    deps,
		met:     deps.Metrics.forStage(name),
		log:     deps.Log.With("stage", name),
		backoff: Backoff{Initial: deps.Pipeline.RetryInitial.Std(), Max: deps.Pipeline.RetryMax.Std()},
		group:   deps.Pipeline.GroupPrefix + "-" + name,
	}, nil
}

// drainContext returns a context that outlives ctx by at most the shutdown
// timeout, so the poll or batch in progress completes instead of being
// thrown away.
func (c *core) drainContext(ctx context.Context) (context.Context, func()) {
	drain, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		time.AfterFunc(c.deps.Pipeline.ShutdownTimeout.Std(), cancel)
	})
	return drain, func() { stop(); cancel() }
}

// NewStage validates cfg and creates the stage's Kafka client. It does not
// connect: the first poll does.
func NewStage(cfg StageConfig, deps Deps) (*Stage, error) {
	missing := ""
	if cfg.Processor == nil {
		missing = "processor"
	}
	c, err := newCore(cfg.Name, cfg.Inputs, cfg.DLQ, missing, deps)
	if err != nil {
		return nil, err
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	s := &Stage{core: c, cfg: cfg}
	s.maxPolls = maxInFlightPolls
	s.maxRecords = maxInFlightFactor * max(1, deps.Pipeline.MaxPollRecords)
	s.commits = newCommitQueue(s.commitOffsets, s.met, s.log)
	s.commits.acked = func(kr *kgo.Record) { s.outCounter(kr.Topic).Inc() }
	s.commits.interval = commitInterval
	extra := []kgo.Opt{
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { s.partitionsGone(ps, true) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { s.partitionsGone(ps, false) }),
	}
	if s.cl, err = newConsumer(cfg.Name, s.group, cfg.Inputs, deps, s.log, extra...); err != nil {
		return nil, err
	}
	return s, nil
}

// partitionsGone runs in the group's goroutine when partitions are revoked
// (rebalance, leaving the group) or lost (session ended). On a revoke it
// waits, within pipeline.shutdown_timeout, until every poll in flight is
// acknowledged and committed, so the next owner starts where this member
// stopped. Then it forgets the partitions, so that no later commit names
// them, and tells a PartitionDropper. A lost session cannot commit: its
// polls in flight are replayed by the next owner.
func (s *Stage) partitionsGone(ps map[string][]int32, revoked bool) {
	if revoked && len(ps) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.deps.Pipeline.ShutdownTimeout.Std())
		err := s.commits.drain(ctx)
		cancel()
		if err != nil {
			s.log.Warn("partitions revoked before the polls in flight were committed; their new owner replays them", "err", err)
		}
	}
	s.commits.forget(ps)
	if dropper, ok := s.cfg.Processor.(PartitionDropper); ok {
		dropper.DropPartitions(ps)
	}
}

// newConsumer creates the Kafka client of a consuming stage: a consumer-group
// member that commits by hand (rebalances wait for the poll in progress),
// reads a new group from the start, and produces with the shared durability
// settings. It registers the stage's Kafka readiness check.
func newConsumer(name, group string, inputs []string, deps Deps, log *slog.Logger, extra ...kgo.Opt) (*kgo.Client, error) {
	clientID := deps.Kafka.ClientID + "-" + name
	hook, err := deps.Metrics.kafkaClient.hook(clientID)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", name, err)
	}
	opts := append(clientOpts(deps.Kafka, clientID), ProducerOpts(deps.Kafka)...)
	opts = append(opts,
		kgo.WithHooks(hook),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(inputs...),
		kgo.DisableAutoCommit(),
		// Offsets are committed by hand; blocking rebalances while a poll
		// is processed means no partition moves with work half done (a
		// Stage's revoke callback then drains what is in flight).
		kgo.BlockRebalanceOnPoll(),
		// A new group reads everything retained: starting at the end would
		// silently skip readings.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A stage catching up a backlog holds what it fetched until it
		// polls it: with franz-go's 1 MiB per partition (decompressed,
		// as records), normalize held 200-220 MiB more live heap over a
		// 240,000-record backlog; at 256 KiB, 82-96 MiB, as fast (four
		// alternating rounds each). A batch bigger than this still comes
		// whole (the broker returns at least one).
		kgo.FetchMaxPartitionBytes(fetchMaxPartitionBytes),
		kgo.SessionTimeout(deps.Pipeline.SessionTimeout.Std()),
		kgo.HeartbeatInterval(min(3*time.Second, deps.Pipeline.SessionTimeout.Std()/3)),
		kgo.WithLogger(kslog.New(log.With("component", "kafka"))),
	)
	opts = append(opts, extra...)
	opts = append(opts, deps.ExtraOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("stage %s: creating kafka client: %w", name, err)
	}
	deps.Health.Add("kafka:"+name, func(ctx context.Context) error { return cl.Ping(ctx) })
	return cl, nil
}

// Name returns the stage's name.
func (s *Stage) Name() string { return s.cfg.Name }

// Run consumes until ctx is done, then drains: the polls in flight are
// finished (their outputs produced and acknowledged, their offsets
// committed) within pipeline.shutdown_timeout, and the client leaves the
// group. It returns nil after a clean drain, or the error that stopped it.
func (s *Stage) Run(ctx context.Context) (err error) {
	drain, stopDrain := s.drainContext(ctx)
	defer stopDrain()
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		s.commits.run(drain)
	}()
	defer func() {
		s.met.ready.Set(0)
		s.commits.stop()
		<-committed
		// Close commits nothing (autocommit is off) and leaves the group;
		// the revoke it triggers finds nothing in flight.
		s.cl.Close()
		s.log.Info("stage stopped", "err", err)
	}()
	s.log.Info("stage started", "inputs", s.cfg.Inputs, "output", s.cfg.Output, "group", s.group)
	flusher, _ := s.cfg.Processor.(Flusher)
	for ctx.Err() == nil {
		if werr := s.commits.waitRoom(ctx, s.maxPolls, s.maxRecords); werr != nil {
			if ctx.Err() != nil {
				break
			}
			// A produce failed: nothing from its poll on is committed.
			return s.stopped(drain, werr)
		}
		pollCtx, cancel := context.WithTimeout(ctx, s.cfg.FlushInterval)
		fetches := s.cl.PollRecords(pollCtx, s.deps.Pipeline.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() {
			break
		}
		healthy := true
		fetches.EachError(func(topic string, partition int32, ferr error) {
			if errors.Is(ferr, context.DeadlineExceeded) || errors.Is(ferr, context.Canceled) {
				return
			}
			healthy = false
			s.log.Warn("fetch error", "topic", topic, "partition", partition, "err", ferr)
		})
		s.met.ready.Set(boolGauge(healthy))
		n := fetches.NumRecords()
		if n == 0 && flusher == nil {
			s.cl.AllowRebalance()
			continue
		}
		herr := s.handle(drain, fetches, flusher)
		s.cl.AllowRebalance()
		if herr != nil {
			return s.stopped(drain, herr)
		}
	}
	if derr := s.commits.drain(drain); derr != nil {
		return s.stopped(drain, derr)
	}
	return nil
}

// stopped commits what completed before the poll that failed (or, on
// shutdown, before the timeout) and returns the stage's error.
func (s *Stage) stopped(drain context.Context, err error) error {
	if derr := s.commits.drain(drain); derr != nil && !errors.Is(derr, err) {
		err = errors.Join(err, derr)
	}
	if drain.Err() != nil {
		return fmt.Errorf("stage %s: shutdown timeout passed with polls in flight; their offsets were not committed and they will be replayed: %w", s.cfg.Name, err)
	}
	return fmt.Errorf("stage %s: %w", s.cfg.Name, err)
}

// handle processes one poll: every partition concurrently, each in order;
// then flushes, and hands the poll's offsets to the committer, which
// commits them once every record produced for the poll is acknowledged.
// It returns once everything is handed to the producer, without waiting
// for acks.
func (s *Stage) handle(ctx context.Context, fetches kgo.Fetches, flusher Flusher) error {
	n := fetches.NumRecords()
	if n > 0 {
		s.met.batch.Observe(float64(n))
	}
	g := s.commits.open(n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		wg.Go(func() {
			if err := s.partition(ctx, p, g); err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
			}
		})
	})
	wg.Wait()
	if firstErr != nil {
		g.close(nil, firstErr)
		return firstErr
	}
	if flusher != nil {
		outs, err := flusher.Flush(ctx, time.Now())
		switch {
		case IsTransient(err):
			s.met.errTrans.Inc()
			err = fmt.Errorf("flushing: %w", err)
			g.close(nil, err)
			return err
		case err != nil:
			s.met.errPerm.Inc()
			s.log.Error("flush failed", "reason", Reason(err), "err", err)
		}
		for _, o := range outs {
			s.produce(ctx, g, o)
		}
	}
	var held map[string]map[int32]int64
	if holder, ok := s.cfg.Processor.(OffsetHolder); ok {
		held = holder.HeldOffsets()
	}
	g.close(s.commits.consumed(fetches, held), nil)
	return nil
}

// commitOffsets commits offsets synchronously and returns the first error,
// of the request or of any partition.
func (s *Stage) commitOffsets(ctx context.Context, offsets map[string]map[int32]kgo.EpochOffset) error {
	var cerr error
	s.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
					cerr = errors.Join(cerr, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr))
				}
			}
		}
	})
	return cerr
}

// partition processes one partition's records in order.
func (s *Stage) partition(ctx context.Context, p kgo.FetchTopicPartition, g *ackGroup) error {
	s.met.recordsIn.Add(float64(len(p.Records)))
	// A Processor retains neither a record nor its slices: one headers
	// buffer serves every record of the partition.
	var headers []Header
	for _, kr := range p.Records {
		start := time.Now()
		rec := Record{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Key: kr.Key, Value: kr.Value, Time: kr.Timestamp}
		if len(kr.Headers) > 0 {
			headers = headers[:0]
			for _, h := range kr.Headers {
				headers = append(headers, Header{Key: h.Key, Value: h.Value})
			}
			rec.Headers = headers
		}
		outs, err := s.processWithRetry(ctx, rec)
		end := time.Now()
		s.met.process.Observe(end.Sub(start).Seconds())
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			s.met.errPerm.Inc()
			reason := Reason(err)
			s.log.Warn("dead-lettering record", "topic", kr.Topic, "partition", kr.Partition,
				"offset", kr.Offset, "reason", reason, "err", err)
			s.send(ctx, g, toKgo(s.deadLetter(kr, err, reason), s.cfg.DLQ), reason)
		}
		for _, o := range outs {
			s.produce(ctx, g, o)
		}
		if !kr.Timestamp.IsZero() {
			s.met.endToEnd.Observe(end.Sub(kr.Timestamp).Seconds())
		}
	}
	last := p.Records[len(p.Records)-1]
	if p.HighWatermark > 0 {
		s.met.setLag(p.Topic, strconv.Itoa(int(p.Partition)), max(0, p.HighWatermark-last.Offset-1))
	}
	return nil
}

// processWithRetry calls the processor, retrying transient errors with
// backoff until they pass or ctx ends. It returns the permanent error, or
// ctx's error.
func (s *Stage) processWithRetry(ctx context.Context, rec Record) ([]Record, error) {
	for attempt := 0; ; attempt++ {
		outs, err := s.cfg.Processor.Process(ctx, rec)
		if err == nil {
			return outs, nil
		}
		if !IsTransient(err) {
			return nil, err
		}
		s.met.errTrans.Inc()
		s.met.retries.Inc()
		if attempt == 0 || attempt%10 == 0 {
			s.log.Warn("transient error, retrying", "topic", rec.Topic, "partition", rec.Partition,
				"offset", rec.Offset, "attempt", attempt+1, "err", err)
		}
		if werr := s.backoff.Wait(ctx, attempt); werr != nil {
			return nil, fmt.Errorf("retrying after %w: %w", err, werr)
		}
	}
}

func (s *Stage) deadLetter(kr *kgo.Record, err error, reason string) Record {
	return deadLetterRecord(fromKgo(kr), s.cfg.Name, s.cfg.DLQ, err, reason)
}

// deadLetterRecord is rec as it goes to the dead-letter topic: key, value and
// headers unchanged, plus why, where from and which stage gave up.
func deadLetterRecord(rec Record, stage, dlq string, err error, reason string) Record {
	return Record{
		Topic: dlq, Key: rec.Key, Value: rec.Value, Time: rec.Time,
		Headers: append(append([]Header(nil), rec.Headers...),
			Header{Key: HeaderError, Value: []byte(err.Error())},
			Header{Key: HeaderErrorReason, Value: []byte(reason)},
			Header{Key: HeaderErrorStage, Value: []byte(stage)},
			Header{Key: HeaderSourceTopic, Value: []byte(rec.Topic)},
			Header{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(rec.Partition)))},
			Header{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		),
	}
}

// produce sends r (to the stage's output when its Topic is empty) as part of
// poll g.
func (s *Stage) produce(ctx context.Context, g *ackGroup, r Record) {
	s.send(ctx, g, toKgo(r, s.cfg.Output), "")
}

// send produces kr asynchronously; its outcome counts towards g, whose
// offsets are committed only once every record sent for it is acknowledged.
// Records whose produce context ends fail.
func (s *Stage) send(ctx context.Context, g *ackGroup, kr *kgo.Record, deadReason string) {
	if kr.Topic == "" {
		g.fail(fmt.Errorf("stage %s produced a record without a topic and has no default output", s.cfg.Name))
		return
	}
	g.add()
	if deadReason == "" {
		s.cl.Produce(ctx, kr, g.promise)
		return
	}
	s.cl.Produce(ctx, kr, func(kr *kgo.Record, err error) {
		if err == nil {
			s.met.dead(deadReason)
		}
		g.promise(kr, err)
	})
}

func (s *Stage) outCounter(topic string) prometheus.Counter {
	if c, ok := s.outCounters.Load(topic); ok {
		return c.(prometheus.Counter)
	}
	c := s.met.m.recordsOut.WithLabelValues(s.met.stage, topic)
	s.outCounters.Store(topic, c)
	return c
}

// commitQueue is the stage's polls in flight, in poll order, and the
// committer that commits their offsets: a poll's offsets are committed once
// it is closed (processed and flushed) and every record produced for it and
// for every poll before it is acknowledged. Several complete polls are
// committed together (later offsets win). A poll that failed (a produce
// error, processing that gave up) is never committed, nor is anything after
// it: err is set and the stage stops.
type commitQueue struct {
	commit func(ctx context.Context, offsets map[string]map[int32]kgo.EpochOffset) error
	met    *stageMetrics
	log    *slog.Logger
	// acked, when set, is called with every record Kafka acknowledged.
	acked func(*kgo.Record)

	wake  chan struct{} // a poll completed; buffered, 1
	hurry chan struct{} // someone waits for a commit; buffered, 1
	quit  chan struct{} // closed by stop
	// interval is the least time between two commits while nobody waits
	// for one.
	interval time.Duration

	mu      sync.Mutex
	groups  []*ackGroup // not committed yet, in poll order
	records int         // consumed records of groups
	opened  uint64      // sequence of the last group opened
	retired uint64      // every group up to this sequence is committed or dropped
	err     error       // the first failed group's error
	stopped bool
	waiters int           // callers of wait that are waiting
	changed chan struct{} // closed and replaced when retired, err or stopped change
	// retry holds offsets whose commit failed, merged under the next
	// commit's so it covers them.
	retry map[string]map[int32]kgo.EpochOffset
	// head is, per partition still assigned, the next offset after the
	// last record consumed, and queued the offset last handed to the
	// committer (for OffsetHolder stages, which re-commit every partition
	// whose held offset moved).
	head   map[string]map[int32]kgo.EpochOffset
	queued map[string]map[int32]kgo.EpochOffset
}

func newCommitQueue(commit func(context.Context, map[string]map[int32]kgo.EpochOffset) error, met *stageMetrics, log *slog.Logger) *commitQueue {
	return &commitQueue{
		commit: commit, met: met, log: log,
		wake: make(chan struct{}, 1), hurry: make(chan struct{}, 1), quit: make(chan struct{}), changed: make(chan struct{}),
		head: map[string]map[int32]kgo.EpochOffset{}, queued: map[string]map[int32]kgo.EpochOffset{},
	}
}

// ackGroup is one poll in flight.
type ackGroup struct {
	q       *commitQueue
	seq     uint64
	records int
	// refs is 1 while the poll is open plus one per record sent and not
	// acknowledged yet; the group is complete when it drops to zero.
	refs atomic.Int64
	// promise is the produce callback of the group's records.
	promise func(*kgo.Record, error)
	// Under q.mu:
	offsets  map[string]map[int32]kgo.EpochOffset
	err      error
	complete bool
	closedAt time.Time
}

// open starts the group of a poll of records consumed records.
func (q *commitQueue) open(records int) *ackGroup {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.opened++
	g := &ackGroup{q: q, seq: q.opened, records: records}
	g.refs.Store(1)
	g.promise = func(kr *kgo.Record, err error) {
		if err != nil {
			g.ack(fmt.Errorf("producing to %s: %w", kr.Topic, err))
			return
		}
		if q.acked != nil {
			q.acked(kr)
		}
		g.ack(nil)
	}
	q.groups = append(q.groups, g)
	q.records += records
	q.met.inFlight.Add(float64(records))
	return g
}

// add counts a record sent for g; ack counts its outcome.
func (g *ackGroup) add() { g.refs.Add(1) }

func (g *ackGroup) ack(err error) {
	if err != nil {
		g.fail(err)
	}
	g.release()
}

func (g *ackGroup) fail(err error) {
	g.q.mu.Lock()
	g.err = errors.Join(g.err, err)
	g.q.mu.Unlock()
}

// close ends g's processing: offsets are what to commit once every record
// sent for it is acknowledged; a non-nil err fails it.
func (g *ackGroup) close(offsets map[string]map[int32]kgo.EpochOffset, err error) {
	g.q.mu.Lock()
	g.offsets = offsets
	g.err = errors.Join(g.err, err)
	g.closedAt = time.Now()
	g.q.mu.Unlock()
	g.release()
}

func (g *ackGroup) release() {
	if g.refs.Add(-1) != 0 {
		return
	}
	g.q.mu.Lock()
	g.complete = true
	g.q.mu.Unlock()
	select {
	case g.q.wake <- struct{}{}:
	default:
	}
}

// consumed records the offsets after fetches and returns what the poll
// commits: the next offset of each partition it consumed or, with held
// (OffsetHolder), of every partition consumed so far, no further than its
// held offset, where that changed since the last poll.
func (q *commitQueue) consumed(fetches kgo.Fetches, held map[string]map[int32]int64) map[string]map[int32]kgo.EpochOffset {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string]map[int32]kgo.EpochOffset{}
	set := func(m map[string]map[int32]kgo.EpochOffset, topic string, p int32, eo kgo.EpochOffset) {
		if m[topic] == nil {
			m[topic] = map[int32]kgo.EpochOffset{}
		}
		m[topic][p] = eo
	}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			last := p.Records[n-1]
			eo := kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}
			set(q.head, p.Topic, p.Partition, eo)
			if held == nil {
				set(out, p.Topic, p.Partition, eo)
			}
		}
	})
	if held == nil {
		return out
	}
	for topic, parts := range q.head {
		for p, eo := range parts {
			if h, ok := held[topic][p]; ok && h < eo.Offset {
				eo = kgo.EpochOffset{Epoch: -1, Offset: h}
			}
			if prev, ok := q.queued[topic][p]; ok && prev == eo {
				continue
			}
			set(q.queued, topic, p, eo)
			set(out, topic, p, eo)
		}
	}
	return out
}

// forget drops partitions the stage no longer owns from everything not
// committed yet, so that no later commit names them.
func (q *commitQueue) forget(ps map[string][]int32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for topic, parts := range ps {
		for _, p := range parts {
			for _, m := range []map[string]map[int32]kgo.EpochOffset{q.retry, q.head, q.queued} {
				delete(m[topic], p)
			}
			for _, g := range q.groups {
				delete(g.offsets[topic], p)
			}
		}
	}
}

// run commits complete polls until stop.
func (q *commitQueue) run(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-q.wake:
		case <-q.quit:
			return
		}
		// At most one commit per interval, unless someone waits for one
		// (a drain, or the poll loop for room): at low load polls are
		// small and many, and a commit each would cost Kafka and the
		// stage more than it saves in replay after a crash.
		if wait := q.interval - time.Since(last); wait > 0 && !q.hurried() {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-q.hurry:
			case <-q.quit:
				t.Stop()
				return
			}
			t.Stop()
		}
		for q.commitComplete(ctx) {
			last = time.Now()
		}
	}
}

func (q *commitQueue) hurried() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiters > 0
}

// commitComplete commits the complete polls at the head of the queue and
// reports whether there were any.
func (q *commitQueue) commitComplete(ctx context.Context) bool {
	q.mu.Lock()
	var done []*ackGroup
	for _, g := range q.groups {
		if !g.complete {
			break
		}
		if g.err != nil {
			// Set once every poll before it is committed, so that
			// whoever waits on the error finds them committed.
			if len(done) == 0 && q.err == nil {
				q.err = g.err
				q.notifyLocked()
			}
			break
		}
		done = append(done, g)
	}
	if len(done) == 0 {
		q.mu.Unlock()
		return false
	}
	offsets := q.retry
	q.retry = nil
	if offsets == nil {
		offsets = map[string]map[int32]kgo.EpochOffset{}
	}
	for _, g := range done {
		for topic, parts := range g.offsets {
			if offsets[topic] == nil {
				offsets[topic] = map[int32]kgo.EpochOffset{}
			}
			for p, eo := range parts {
				offsets[topic][p] = eo
			}
		}
	}
	q.mu.Unlock()

	var err error
	if len(offsets) > 0 {
		err = q.commit(ctx, offsets)
	}
	now := time.Now()
	records := 0
	for _, g := range done {
		q.met.commit.Observe(now.Sub(g.closedAt).Seconds())
		records += g.records
	}
	q.met.inFlight.Sub(float64(records))

	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		// Kafka went away between the acks and the commit, or the group
		// session ended. Everything of these polls is produced, so the
		// next commit covers them; if the partitions move meanwhile,
		// their new owner replays from the last commit, and downstream
		// merges the duplicates. Stopping here would take the whole
		// process down, the bridge's MQTT connection with it.
		q.met.errTrans.Inc()
		q.log.Warn("committing offsets failed; the next commit covers them", "err", err)
		// Partitions forgotten while the commit was in flight are not
		// retried: their offsets are no longer this member's to commit.
		q.retry = map[string]map[int32]kgo.EpochOffset{}
		for topic, parts := range offsets {
			for p, eo := range parts {
				if _, owned := q.head[topic][p]; !owned {
					continue
				}
				if q.retry[topic] == nil {
					q.retry[topic] = map[int32]kgo.EpochOffset{}
				}
				q.retry[topic][p] = eo
			}
		}
	}
	clear(q.groups[:len(done)])
	q.groups = q.groups[len(done):]
	q.records -= records
	q.retired = done[len(done)-1].seq
	q.notifyLocked()
	return true
}

func (q *commitQueue) notifyLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// wait blocks until ready (called under q.mu) holds, the queue failed or
// stopped, or ctx ends.
func (q *commitQueue) wait(ctx context.Context, ready func() bool) error {
	waiting := false
	defer func() {
		if waiting {
			q.mu.Lock()
			q.waiters--
			q.mu.Unlock()
		}
	}()
	for {
		q.mu.Lock()
		switch {
		case q.err != nil:
			err := q.err
			q.mu.Unlock()
			return err
		case ready():
			q.mu.Unlock()
			return nil
		case q.stopped:
			q.mu.Unlock()
			return errors.New("the committer stopped with polls in flight")
		}
		if !waiting {
			// Someone waits for a commit: the committer does not hold
			// commits back for its interval meanwhile.
			waiting = true
			q.waiters++
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case q.hurry <- struct{}{}:
		default:
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitRoom waits until fewer than polls polls and records records are in
// flight. It returns the queue's error if a poll failed.
func (q *commitQueue) waitRoom(ctx context.Context, polls, records int) error {
	return q.wait(ctx, func() bool { return len(q.groups) < polls && q.records < records })
}

// drain waits until every poll opened so far is committed. It returns the
// error of a poll that failed (nothing from it on is committed), or ctx's.
func (q *commitQueue) drain(ctx context.Context) error {
	q.mu.Lock()
	target := q.opened
	q.mu.Unlock()
	return q.wait(ctx, func() bool { return q.retired >= target })
}

// stop ends run; drains in progress return.
func (q *commitQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.stopped {
		q.stopped = true
		close(q.quit)
		q.notifyLocked()
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

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

// A Flusher is a windowed stage; the runtime calls Flush before committing
// offsets, and at least every FlushInterval when idle, with the time of the
// call as the processing-time watermark. Records Flush returns are produced
// and acknowledged before the offsets are committed. Errors are handled as
// Process errors, without a record to dead-letter: a permanent one is logged
// and counted.
type Flusher interface {
	Flush(ctx context.Context, watermark time.Time) ([]Record, error)
}

// An OffsetHolder is a processor that keeps consumed records in state not
// yet reflected downstream (open windows). The runtime commits each partition
// no further than the offset HeldOffsets names, so after a crash the records
// needed to rebuild that state are consumed again; the processor must then
// emit idempotently (same key, same value). Called after Flush, between
// polls.
type OffsetHolder interface {
	// HeldOffsets returns, per topic and partition, the lowest offset the
	// state still needs; a partition that is absent holds nothing back.
	HeldOffsets() map[string]map[int32]int64
}

// A PartitionDropper is told when the stage loses partitions (rebalance,
// session loss), so it can drop their state: the next owner rebuilds it from
// the committed offsets.
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
type Stage struct {
	core
	cfg StageConfig
}

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
	var extra []kgo.Opt
	if dropper, ok := cfg.Processor.(PartitionDropper); ok {
		drop := func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { dropper.DropPartitions(ps) }
		extra = append(extra, kgo.OnPartitionsRevoked(drop), kgo.OnPartitionsLost(drop))
	}
	if s.cl, err = newConsumer(cfg.Name, s.group, cfg.Inputs, deps, s.log, extra...); err != nil {
		return nil, err
	}
	return s, nil
}

// newConsumer creates the Kafka client of a consuming stage: a consumer-group
// member that commits by hand between polls (rebalances wait for the poll in
// progress), reads a new group from the start, and produces with the shared
// durability settings. It registers the stage's Kafka readiness check.
func newConsumer(name, group string, inputs []string, deps Deps, log *slog.Logger, extra ...kgo.Opt) (*kgo.Client, error) {
	clientID := deps.Kafka.ClientID + "-" + name
	hook, err := deps.Metrics.kafkaClient.hook(clientID)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", name, err)
	}
	opts := append(clientOpts(deps.Kafka, clientID), producerOpts(deps.Kafka)...)
	opts = append(opts,
		kgo.WithHooks(hook),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(inputs...),
		kgo.DisableAutoCommit(),
		// Offsets are committed between polls; blocking rebalances while a
		// poll is processed means no partition moves with work half done.
		kgo.BlockRebalanceOnPoll(),
		// A new group reads everything retained: starting at the end would
		// silently skip readings.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
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

// Run consumes until ctx is done, then drains: the poll in progress is
// finished (its outputs produced and acknowledged, its offsets committed)
// within pipeline.shutdown_timeout, and the client leaves the group. It
// returns nil after a clean drain, or the error that stopped it.
func (s *Stage) Run(ctx context.Context) (err error) {
	drain, stopDrain := s.drainContext(ctx)
	defer stopDrain()
	defer func() {
		s.met.ready.Set(0)
		// Close commits nothing (autocommit is off) and leaves the group.
		s.cl.Close()
		s.log.Info("stage stopped", "err", err)
	}()
	s.log.Info("stage started", "inputs", s.cfg.Inputs, "output", s.cfg.Output, "group", s.group)
	flusher, _ := s.cfg.Processor.(Flusher)
	for ctx.Err() == nil {
		pollCtx, cancel := context.WithTimeout(ctx, s.cfg.FlushInterval)
		fetches := s.cl.PollRecords(pollCtx, s.deps.Pipeline.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() {
			return nil
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
		if err := s.handle(drain, fetches, flusher); err != nil {
			s.cl.AllowRebalance()
			if drain.Err() != nil {
				return fmt.Errorf("stage %s: shutdown timeout passed with a poll in progress; its offsets were not committed and it will be replayed: %w", s.cfg.Name, err)
			}
			return fmt.Errorf("stage %s: %w", s.cfg.Name, err)
		}
		s.cl.AllowRebalance()
	}
	return nil
}

// handle processes one poll: every partition concurrently, each in order;
// then flushes, waits for every produced record's ack, and commits.
func (s *Stage) handle(ctx context.Context, fetches kgo.Fetches, flusher Flusher) error {
	n := fetches.NumRecords()
	if n > 0 {
		s.met.batch.Observe(float64(n))
		s.met.inFlight.Add(float64(n))
		defer s.met.inFlight.Sub(float64(n))
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	prod := newAckTracker(s)
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		wg.Go(func() {
			if err := s.partition(ctx, p, prod); err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
			}
		})
	})
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	start := time.Now()
	if flusher != nil {
		outs, err := flusher.Flush(ctx, time.Now())
		switch {
		case IsTransient(err):
			s.met.errTrans.Inc()
			return fmt.Errorf("flushing: %w", err)
		case err != nil:
			s.met.errPerm.Inc()
			s.log.Error("flush failed", "reason", Reason(err), "err", err)
		}
		for _, o := range outs {
			prod.produce(ctx, o)
		}
	}
	if err := prod.wait(); err != nil {
		return err
	}
	var err error
	if holder, ok := s.cfg.Processor.(OffsetHolder); ok {
		err = s.commitHeld(ctx, holder.HeldOffsets())
	} else if n > 0 {
		err = s.cl.CommitUncommittedOffsets(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("committing offsets: %w", err)
		}
		// Kafka went away between the acks and the commit, or the group
		// session ended. Everything of this poll is produced, so the next
		// commit covers it; if the partitions move meanwhile, their new
		// owner replays from the last commit, and downstream merges the
		// duplicates. Stopping here would take the whole process down,
		// the bridge's MQTT connection with it.
		s.met.errTrans.Inc()
		s.log.Warn("committing offsets failed; the next commit covers them", "err", err)
	}
	s.met.commit.Observe(time.Since(start).Seconds())
	return nil
}

// commitHeld commits, for every partition consumed so far, the next offset
// or the held one, whichever is lower.
func (s *Stage) commitHeld(ctx context.Context, held map[string]map[int32]int64) error {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for topic, parts := range s.cl.UncommittedOffsets() {
		for p, eo := range parts {
			if h, ok := held[topic][p]; ok && h < eo.Offset {
				eo = kgo.EpochOffset{Epoch: -1, Offset: h}
			}
			if offsets[topic] == nil {
				offsets[topic] = map[int32]kgo.EpochOffset{}
			}
			offsets[topic][p] = eo
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	var cerr error
	s.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
					cerr = fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr)
				}
			}
		}
	})
	return cerr
}

// partition processes one partition's records in order.
func (s *Stage) partition(ctx context.Context, p kgo.FetchTopicPartition, prod *ackTracker) error {
	for _, kr := range p.Records {
		s.met.recordsIn.Inc()
		start := time.Now()
		outs, err := s.processWithRetry(ctx, fromKgo(kr))
		s.met.process.Observe(time.Since(start).Seconds())
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			s.met.errPerm.Inc()
			reason := Reason(err)
			s.log.Warn("dead-lettering record", "topic", kr.Topic, "partition", kr.Partition,
				"offset", kr.Offset, "reason", reason, "err", err)
			prod.produceDead(ctx, s.deadLetter(kr, err, reason), reason)
		}
		for _, o := range outs {
			prod.produce(ctx, o)
		}
		if !kr.Timestamp.IsZero() {
			s.met.endToEnd.Observe(time.Since(kr.Timestamp).Seconds())
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

// ackTracker produces records asynchronously and collects their outcome, so
// one poll's records are in flight together and waited for once.
type ackTracker struct {
	s    *Stage
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs error
}

func newAckTracker(s *Stage) *ackTracker { return &ackTracker{s: s} }

func (a *ackTracker) produce(ctx context.Context, r Record) {
	a.send(ctx, toKgo(r, a.s.cfg.Output), "")
}

func (a *ackTracker) produceDead(ctx context.Context, r Record, reason string) {
	a.send(ctx, toKgo(r, a.s.cfg.DLQ), reason)
}

func (a *ackTracker) send(ctx context.Context, kr *kgo.Record, deadReason string) {
	if kr.Topic == "" {
		a.fail(fmt.Errorf("stage %s produced a record without a topic and has no default output", a.s.cfg.Name))
		return
	}
	a.wg.Add(1)
	a.s.cl.Produce(ctx, kr, func(kr *kgo.Record, err error) {
		defer a.wg.Done()
		if err != nil {
			a.fail(fmt.Errorf("producing to %s: %w", kr.Topic, err))
			return
		}
		a.s.met.out(kr.Topic, 1)
		if deadReason != "" {
			a.s.met.dead(deadReason)
		}
	})
}

func (a *ackTracker) fail(err error) {
	a.mu.Lock()
	a.errs = errors.Join(a.errs, err)
	a.mu.Unlock()
}

// wait returns once every record sent was acknowledged or failed. Records
// whose produce context ends fail, so this returns soon after ctx is done.
func (a *ackTracker) wait() error {
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.errs
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

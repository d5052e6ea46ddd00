package submit

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
)

// Deps are the stage's collaborators.
type Deps struct {
	// Store is the compliance database layer. Required.
	Store *store.Store
	// Protocols are the regulator clients by protocol name
	// (compliance.NewProtocols). Required.
	Protocols map[string]compliance.Protocol
	// Decoder decodes compliance.records values; required by Processor.
	Decoder Decoder
	// Registerer and Log are required.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Submit is the submit stage: a pipeline.Processor that fills slots from
// compliance.records (Processor) and, in Run, one leader-elected submitter
// loop per source plus slot maintenance.
type Submit struct {
	cfg  config.Submit
	deps Deps
	log  *slog.Logger
	met  *metrics
	now  func() time.Time

	mu     sync.Mutex
	wakeup map[string]chan struct{} // per source, buffered 1
}

// New validates cfg and deps and registers the stage's metrics.
func New(cfg config.Submit, deps Deps) (*Submit, error) {
	switch {
	case deps.Store == nil:
		return nil, errors.New("submit: a store is required")
	case len(deps.Protocols) == 0:
		return nil, errors.New("submit: protocols are required")
	case deps.Registerer == nil || deps.Log == nil:
		return nil, errors.New("submit: a registerer and a logger are required")
	case cfg.PollInterval <= 0 || cfg.BatchSize <= 0 || cfg.LockRetry <= 0 || cfg.UnknownAfter <= 0 ||
		cfg.BackoffInitial <= 0 || cfg.BackoffMax <= 0 || cfg.MaintainInterval <= 0:
		return nil, errors.New("submit: the configuration must be validated (config.Submit)")
	}
	met, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	return &Submit{cfg: cfg, deps: deps, log: deps.Log, met: met, now: now, wakeup: map[string]chan struct{}{}}, nil
}

// Processor returns the compliance.records processor; it needs
// Deps.Decoder.
func (s *Submit) Processor() (pipeline.Processor, error) {
	if s.deps.Decoder == nil {
		return nil, errors.New("submit: a decoder is required for the processor")
	}
	return &processor{dec: s.deps.Decoder, slots: s.deps.Store, met: s.met, s: s}, nil
}

// wakeChan returns the wake-up channel of source.
func (s *Submit) wakeChan(source string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.wakeup[source]
	if !ok {
		ch = make(chan struct{}, 1)
		s.wakeup[source] = ch
	}
	return ch
}

// wake tells source's submitter (if it runs in this process) that a slot
// was filled, so it need not wait for the next poll.
func (s *Submit) wake(source string) {
	select {
	case s.wakeChan(source) <- struct{}{}:
	default:
	}
}

// wakeAll wakes every source's submitter running in this process.
func (s *Submit) wakeAll() {
	s.mu.Lock()
	chans := make([]chan struct{}, 0, len(s.wakeup))
	for _, ch := range s.wakeup {
		chans = append(chans, ch)
	}
	s.mu.Unlock()
	for _, ch := range chans {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run submits until ctx is done: slot maintenance every
// submit.maintain_interval, and one leader loop per source (new sources
// are picked up at each maintenance round). It returns nil once ctx is
// done and in-flight requests are recorded.
func (s *Submit) Run(ctx context.Context) error {
	s.log.Info("submitter started", "poll_interval", s.cfg.PollInterval.Std().String(), "unknown_after", s.cfg.UnknownAfter.Std().String())
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		s.log.Info("submitter stopped")
	}()
	started := map[string]bool{}
	tick := time.NewTicker(s.cfg.MaintainInterval.Std())
	defer tick.Stop()
	for {
		s.maintain(ctx)
		srcs, err := s.deps.Store.Sources(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("reading compliance sources", "err", err)
		}
		for _, src := range srcs {
			if started[src.Code] {
				continue
			}
			started[src.Code] = true
			wg.Add(1)
			go func(code string) {
				defer wg.Done()
				s.lead(ctx, code)
			}(src.Code)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// maintain creates the slots ahead, writes off stale ones and refreshes
// the gauges. Failures are logged and counted; the next round retries.
func (s *Submit) maintain(ctx context.Context) {
	now := s.now()
	n, err := s.deps.Store.EnsureSlots(ctx, now, s.cfg.SlotsAhead.Std(), s.cfg.WriteOffAfter.Std())
	s.met.created.Add(float64(n))
	if err == nil {
		var b store.Backfilled
		b, err = s.deps.Store.BackfillFromReadings(ctx, now, s.cfg.BackfillAfter.Std(), 10*s.cfg.BatchSize)
		s.met.backfilled.Add(float64(b.Filled))
		if b.Filled > 0 {
			s.log.Info("slots filled from the readings table", "checked", b.Checked, "filled", b.Filled)
			s.wakeAll()
		}
	}
	if err == nil {
		var w int
		w, err = s.deps.Store.WriteOff(ctx, now, s.cfg.WriteOffAfter.Std())
		s.met.writtenOff.Add(float64(w))
		if w > 0 {
			s.log.Warn("slots written off without data", "slots", w, "after", s.cfg.WriteOffAfter.Std().String())
		}
	}
	if err == nil {
		var counts map[string]map[string]int
		var oldest map[string]time.Time
		if counts, oldest, err = s.deps.Store.StatusCounts(ctx); err == nil {
			s.met.slots.Reset()
			s.met.oldest.Reset()
			for src, by := range counts {
				for _, st := range store.Statuses {
					s.met.slots.WithLabelValues(src, st).Set(float64(by[st]))
				}
				age := 0.0
				if o, ok := oldest[src]; ok && now.After(o) {
					age = now.Sub(o).Seconds()
				}
				s.met.oldest.WithLabelValues(src).Set(age)
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		s.met.maintainErr.Inc()
		s.log.Warn("slot maintenance failed", "err", err)
	}
}

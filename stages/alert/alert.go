package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/alerts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
)

// Quality flags of readings the stage reads (stages/normalize/quality.go;
// the quality_flags table lists them).
const (
	flagRollover int32 = 4
	flagReset    int32 = 8
)

// outboxBatch is how many alert events one ProducePending call takes.
const outboxBatch = 100

// Store is what the stage needs of *alerts.Store.
type Store interface {
	ActiveRules(ctx context.Context) ([]alerts.Rule, error)
	UnresolvedAlerts(ctx context.Context) ([]alerts.Alert, error)
	Observe(ctx context.Context, rule alerts.Rule, variable string, obs alerts.Observation, now time.Time, renotify time.Duration) (alerts.Outcome, error)
	ProducePending(ctx context.Context, limit int, produce alerts.ProduceFunc) (events, notifications int, err error)
	PendingCount(ctx context.Context) (int, error)
	ComplianceMissing(ctx context.Context, point string, cutoff time.Time) (alerts.ComplianceCount, error)
	ComplianceRejected(ctx context.Context, point string, since time.Time) (alerts.ComplianceCount, error)
	RecentReadings(ctx context.Context, point, variable string, from, before time.Time) ([]alerts.Sample, error)
	LatestTimes(ctx context.Context, points []string, since time.Time) ([]alerts.SeriesTime, error)
}

// Decoder decodes telemetry.readings values (schemas.Codec[schemas.Reading]).
// An error wrapping schemas.ErrBadRecord is permanent; any other transient.
type Decoder interface {
	Decode(b []byte, v *schemas.Reading) error
}

// Encoder encodes notifications values (schemas.Codec[schemas.Notification]).
type Encoder interface {
	Encode(v *schemas.Notification) ([]byte, error)
}

// Producer writes notifications to Kafka; *pipeline.Producer.
type Producer interface {
	// Produce calls ack once, with nil once Kafka acknowledged the record.
	Produce(ctx context.Context, r pipeline.Record, ack func(error))
	// Ping checks that a broker answers.
	Ping(ctx context.Context) error
}

// Deps are the stage's collaborators. All but Now are required.
type Deps struct {
	Store    Store
	Decoder  Decoder
	Encoder  Encoder
	Producer Producer
	// Topic is the notifications topic.
	Topic      string
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the processing clock; nil means time.Now.
	Now func() time.Time
	// MissingAfter is submit.missing_after: how long after its instant a
	// compliance slot without data is missing, the default of
	// compliance_missing rules (params.after overrides it). One definition
	// for the alerts, the daily report and the API. Required.
	MissingAfter time.Duration
}

// Evaluator is the alert stage's processor: it implements
// pipeline.Processor, pipeline.Flusher and pipeline.PartitionDropper.
// Process, Flush and DropPartitions are safe for concurrent use. Lock
// order: a partition's mu, then dispatchMu, then Evaluator.mu (no lock is
// held while waiting for another of the same kind).
type Evaluator struct {
	cfg  config.Alert
	deps Deps
	now  func() time.Time
	met  *metrics
	log  *slog.Logger

	rules atomic.Pointer[ruleSet]

	mu       sync.Mutex              // guards the fields below
	parts    map[partKey]*partition  // per input partition
	open     map[alertKey]*openAlert // unresolved alerts, cached from the database
	seeded   map[seriesKey]time.Time // series of data_gap points not seen in this run: latest stored reading
	seededOK map[string]bool         // points whose series were seeded
	loaded   bool                    // rules and open alerts were loaded once
	started  time.Time               // processing time of the first load
	lastEval time.Time               // wall time of the last periodic evaluation

	dispatchMu sync.Mutex // one outbox pass at a time in this process
}

// ruleSet is the active rules, by point.
type ruleSet struct {
	byPoint map[string][]alerts.Rule
	gap     []string // points with data_gap rules
	all     []alerts.Rule
}

type alertKey struct {
	rule     int64
	variable string
}

// openAlert is what the stage remembers of an unresolved alert to avoid a
// database round trip per reading.
type openAlert struct {
	id           int64
	state        string
	lastNotified time.Time
	lastSeen     time.Time // last firing observation's time
	touched      time.Time // processing time the database row was last written or read
}

// New validates cfg and deps and registers the stage's metrics.
func New(cfg config.Alert, deps Deps) (*Evaluator, error) {
	if deps.Store == nil || deps.Decoder == nil || deps.Encoder == nil || deps.Producer == nil ||
		deps.Registerer == nil || deps.Log == nil || deps.Topic == "" {
		return nil, errors.New("alert: store, decoder, encoder, producer, topic, registerer and log are required")
	}
	var problems []error
	for _, d := range []struct {
		key string
		v   config.Duration
	}{
		{"alert.evaluate_interval", cfg.EvaluateInterval}, {"alert.renotify_interval", cfg.RenotifyInterval},
		{"alert.idle_after", cfg.IdleAfter}, {"alert.lag_tolerance", cfg.LagTolerance},
		{"alert.produce_timeout", cfg.ProduceTimeout}, {"submit.missing_after", config.Duration(deps.MissingAfter)},
	} {
		if d.v <= 0 {
			problems = append(problems, fmt.Errorf("%s: must be positive; got %s", d.key, d.v))
		}
	}
	if err := errors.Join(problems...); err != nil {
		return nil, err
	}
	met, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("alert: registering metrics: %w", err)
	}
	e := &Evaluator{cfg: cfg, deps: deps, now: deps.Now, met: met, log: deps.Log,
		parts: map[partKey]*partition{}, open: map[alertKey]*openAlert{},
		seeded: map[seriesKey]time.Time{}, seededOK: map[string]bool{}}
	if e.now == nil {
		e.now = time.Now
	}
	e.rules.Store(&ruleSet{byPoint: map[string][]alerts.Rule{}})
	return e, nil
}

// load reads the active rules and the unresolved alerts, replacing the
// caches. It also sets the open_alerts gauge.
func (e *Evaluator) load(ctx context.Context) error {
	rules, err := e.deps.Store.ActiveRules(ctx)
	if err != nil {
		return err
	}
	open, err := e.deps.Store.UnresolvedAlerts(ctx)
	if err != nil {
		return err
	}
	rs := &ruleSet{byPoint: map[string][]alerts.Rule{}, all: rules}
	gapSeen := map[string]bool{}
	for _, r := range rules {
		rs.byPoint[r.Point] = append(rs.byPoint[r.Point], r)
		if r.Kind == alerts.KindDataGap && !gapSeen[r.Point] {
			gapSeen[r.Point] = true
			rs.gap = append(rs.gap, r.Point)
		}
	}
	now := e.now()
	cache := make(map[alertKey]*openAlert, len(open))
	byKind := map[alerts.Kind]int{}
	for _, a := range open {
		cache[alertKey{a.RuleID, a.Variable}] = &openAlert{id: a.ID, state: a.State, lastNotified: a.LastNotifiedAt,
			lastSeen: a.LastSeenAt, touched: now}
		byKind[a.Kind]++
	}
	for _, k := range alerts.AllKinds() {
		e.met.open.WithLabelValues(string(k)).Set(float64(byKind[k]))
	}
	e.rules.Store(rs)
	e.mu.Lock()
	e.open = cache
	if !e.loaded {
		e.loaded, e.started = true, now
	}
	e.mu.Unlock()
	return nil
}

// ensureLoaded loads the caches once, before the first reading.
func (e *Evaluator) ensureLoaded(ctx context.Context) error {
	e.mu.Lock()
	loaded := e.loaded
	e.mu.Unlock()
	if loaded {
		return nil
	}
	return e.load(ctx)
}

// renotify is the rule's re-notification interval.
func (e *Evaluator) renotify(r alerts.Rule) time.Duration {
	if r.RenotifyInterval > 0 {
		return r.RenotifyInterval
	}
	return e.cfg.RenotifyInterval.Std()
}

// observe judges rule for variable through the open-alert cache, going to
// the database only when something may change: firing without a cached
// alert, firing with the re-notification due or the row not written for
// evaluate_interval, not firing with a cached alert. It reports whether an
// event was recorded.
func (e *Evaluator) observe(ctx context.Context, rule alerts.Rule, variable string, obs alerts.Observation) (bool, error) {
	e.met.evaluated.WithLabelValues(string(rule.Kind)).Inc()
	k := alertKey{rule.ID, variable}
	now := e.now()
	e.mu.Lock()
	o := e.open[k]
	var skip bool
	switch {
	case o == nil && !obs.Firing:
		skip = true
	case o != nil && obs.Firing:
		due := o.state == alerts.StateOpen && now.Sub(o.lastNotified) >= e.renotify(rule)
		if !due && now.Sub(o.touched) < e.cfg.EvaluateInterval.Std() {
			if obs.At.After(o.lastSeen) {
				o.lastSeen = obs.At
			}
			skip = true
		}
	}
	e.mu.Unlock()
	if skip {
		return false, nil
	}
	out, err := e.deps.Store.Observe(ctx, rule, variable, obs, now, e.cfg.RenotifyInterval.Std())
	if err != nil {
		return false, err
	}
	e.mu.Lock()
	if out.RuleChanged {
		// Read the rules again at the next flush.
		e.lastEval = time.Time{}
	}
	if a := out.Alert; a.ID == 0 || a.State == alerts.StateResolved {
		delete(e.open, k)
	} else {
		e.open[k] = &openAlert{id: a.ID, state: a.State, lastNotified: a.LastNotifiedAt, lastSeen: a.LastSeenAt, touched: now}
	}
	e.mu.Unlock()
	kind := string(rule.Kind)
	switch out.Event {
	case alerts.EventOpened:
		e.met.opened.WithLabelValues(kind).Inc()
		e.log.Info("alert opened", "alert_id", out.Alert.ID, "rule_id", rule.ID, "kind", kind, "point", rule.Point, "variable", variable)
	case alerts.EventRenotified:
		e.met.renotified.WithLabelValues(kind).Inc()
	case alerts.EventResolved:
		e.met.resolved.WithLabelValues(kind).Inc()
		e.log.Info("alert resolved", "alert_id", out.Alert.ID, "rule_id", rule.ID, "kind", kind, "point", rule.Point, "variable", variable)
	}
	return out.Event != "", nil
}

// cachedOpen returns the cached unresolved alert of rule and variable.
func (e *Evaluator) cachedOpen(rule int64, variable string) (openAlert, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	o := e.open[alertKey{rule, variable}]
	if o == nil {
		return openAlert{}, false
	}
	return *o, true
}

// Process implements pipeline.Processor: it judges the per-reading rules
// of one reading's point and variable, records what changes, and produces
// the notifications of the events it caused through the outbox. It returns
// no record. A value that is not a Reading is dead-lettered (bad_payload);
// a database that cannot be reached is a transient error (retried: the
// reading's effect on the series is applied only once its judgements are
// stored), one that refuses a statement a permanent one (alert_store), so
// nothing can stall the partition.
func (e *Evaluator) Process(ctx context.Context, rec pipeline.Record) ([]pipeline.Record, error) {
	var r schemas.Reading
	if err := e.deps.Decoder.Decode(rec.Value, &r); err != nil {
		if errors.Is(err, schemas.ErrBadRecord) {
			return nil, pipeline.Permanent("bad_payload", err)
		}
		return nil, pipeline.Transient(err)
	}
	if err := e.ensureLoaded(ctx); err != nil {
		return nil, storeError(err)
	}
	start := time.Now()
	defer func() { e.met.latency.WithLabelValues("reading").Observe(time.Since(start).Seconds()) }()
	now := e.now()
	p := e.partition(partKey{rec.Topic, rec.Partition})
	p.mu.Lock()
	defer p.mu.Unlock()
	arrival := r.ReceivedAt
	if arrival.IsZero() || arrival.After(now) {
		arrival = now
	}
	rules := e.rules.Load().byPoint[r.Point]
	key := seriesKey{r.Point, r.Variable}
	s := p.series[key]
	if s == nil {
		seed, err := e.history(ctx, rules, r)
		if err != nil {
			return nil, storeError(err)
		}
		s = seed
	}
	next, reset := s.advance(r, arrival, rules)
	events := false
	for _, rule := range rules {
		if rule.Variable != "" && rule.Variable != r.Variable {
			continue
		}
		obs, judge := e.judge(rule, s, next, r, reset)
		if !judge {
			continue
		}
		ev, err := e.observe(ctx, rule, r.Variable, obs)
		if err != nil {
			return nil, storeError(err)
		}
		events = events || ev
	}
	// Judged and stored: now the reading moves the state.
	p.series[key] = next
	if arrival.After(p.arrival) {
		p.arrival = arrival
	}
	p.lastRecord = now
	e.mu.Lock()
	delete(e.seeded, key)
	e.mu.Unlock()
	e.met.readings.Inc()
	if events {
		// The events are safe in the outbox; a failure here is retried
		// by the periodic evaluation.
		if err := e.dispatch(ctx); err != nil {
			e.met.errors.WithLabelValues("outbox").Inc()
			e.log.Warn("producing alert notifications failed; they stay in the outbox", "err", err)
		}
	}
	return nil, nil
}

// storeError classifies a store error for the runtime: the database
// refusing a statement is permanent (the reading is dead-lettered with
// reason alert_store, and replayable after a fix) so that it cannot stall
// the partition; anything else (unreachable, busy) is transient and
// retried.
func storeError(err error) error {
	if alerts.IsPermanent(err) {
		return pipeline.Permanent("alert_store", err)
	}
	return pipeline.Transient(err)
}

// history returns a new series for r's point and variable, rebuilt from
// the readings table when a rule of the variable needs history (rate of
// change, stuck, totalizer reset): the stored readings of the longest
// stuck window (at least an hour) before r.
func (e *Evaluator) history(ctx context.Context, rules []alerts.Rule, r schemas.Reading) (*series, error) {
	s := &series{}
	lookback := time.Duration(0)
	for _, rule := range rules {
		if rule.Variable != r.Variable {
			continue
		}
		switch rule.Kind {
		case alerts.KindRateOfChange, alerts.KindTotalizerReset:
			lookback = max(lookback, time.Hour)
		case alerts.KindStuck:
			lookback = max(lookback, rule.Params.Window, time.Hour)
		}
	}
	if lookback == 0 {
		return s, nil
	}
	samples, err := e.deps.Store.RecentReadings(ctx, r.Point, r.Variable, r.Time.Add(-lookback), r.Time)
	if err != nil {
		return nil, err
	}
	for _, smp := range samples {
		n, _ := s.advance(schemas.Reading{Point: r.Point, Variable: r.Variable, Time: smp.Time, Value: smp.Value,
			Quality: smp.Quality}, time.Time{}, rules)
		s = n
	}
	return s, nil
}

// judge returns the observation of rule for the reading r that moves the
// series from prev to next, and false when the rule has nothing to say
// about it (a late reading, the first of a series, a value inside a
// threshold's deadband).
func (e *Evaluator) judge(rule alerts.Rule, prev, next *series, r schemas.Reading, reset bool) (alerts.Observation, bool) {
	v := r.Value
	obs := alerts.Observation{Value: &v, Unit: r.Unit, At: r.Time, Details: map[string]any{"device": r.Device}}
	inOrder := next.lastTime.Equal(r.Time) && (!prev.has || r.Time.After(prev.lastTime))
	p := rule.Params
	switch rule.Kind {
	case alerts.KindDataGap:
		// Any reading ends a gap; nothing is judged when nothing is open.
		obs.Value = nil
		obs.Firing = false
		return obs, true
	case alerts.KindThresholdAbove, alerts.KindThresholdBelow:
		if !inOrder {
			return obs, false
		}
		obs.Details["limit"] = p.Limit
		above := rule.Kind == alerts.KindThresholdAbove
		switch {
		case above && v > p.Limit, !above && v < p.Limit:
			obs.Firing = true
		case above && v <= p.Limit-p.Deadband, !above && v >= p.Limit+p.Deadband:
			obs.Firing = false
		default:
			return obs, false // inside the deadband: the state stays
		}
		return obs, true
	case alerts.KindRateOfChange:
		if !inOrder || !prev.has {
			return obs, false
		}
		dt := r.Time.Sub(prev.lastTime).Minutes()
		rate := math.Abs(v-prev.lastValue) / dt
		obs.Details["rate_per_minute"] = rate
		obs.Details["max_per_minute"] = p.MaxPerMinute
		obs.Details["previous_value"] = prev.lastValue
		obs.Firing = rate > p.MaxPerMinute
		return obs, true
	case alerts.KindStuck:
		if !inOrder {
			return obs, false
		}
		flat := r.Time.Sub(next.runStart)
		obs.Details["flat_since"] = next.runStart.UTC().Format(time.RFC3339)
		obs.Details["window"] = p.Window.String()
		obs.Firing = next.runN >= 2 && flat >= p.Window
		return obs, true
	case alerts.KindTotalizerReset:
		if !inOrder {
			return obs, false
		}
		if reset {
			if prev.has {
				obs.Details["previous_value"] = prev.lastValue
			}
			obs.Firing = true
			return obs, true
		}
		o, ok := e.cachedOpen(rule.ID, r.Variable)
		if !ok || r.Time.Before(o.lastSeen.Add(p.ClearAfter)) {
			return obs, false
		}
		obs.Firing = false
		return obs, true
	}
	return obs, false
}

// Flush implements pipeline.Flusher: every alert.evaluate_interval (of
// the runtime's clock, the wall time) it runs one periodic evaluation (see
// Evaluate). It returns no record and no error: failures are logged,
// counted and retried at the next evaluation, never allowed to stop the
// stage.
func (e *Evaluator) Flush(ctx context.Context, wall time.Time) ([]pipeline.Record, error) {
	e.mu.Lock()
	due := wall.Sub(e.lastEval) >= e.cfg.EvaluateInterval.Std()
	if due {
		e.lastEval = wall
	}
	e.mu.Unlock()
	if due {
		e.Evaluate(ctx)
	}
	return nil, nil
}

// Evaluate runs one periodic evaluation: reload rules and unresolved
// alerts, judge data gaps and compliance rules (and re-notify the alerts
// of those still firing), then produce the outbox. Each step's failure is
// logged and counted and the other steps go on.
func (e *Evaluator) Evaluate(ctx context.Context) {
	start := time.Now()
	defer func() { e.met.latency.WithLabelValues("periodic").Observe(time.Since(start).Seconds()) }()
	step := func(name string, err error) {
		if err != nil && ctx.Err() == nil {
			e.met.errors.WithLabelValues(name).Inc()
			e.log.Warn("alert evaluation step failed; retried at the next evaluation", "step", name, "err", err)
		}
	}
	if err := e.load(ctx); err != nil {
		step("load", err)
		return
	}
	step("data_gap", e.evaluateGaps(ctx))
	step("compliance", e.evaluateCompliance(ctx))
	step("outbox", e.dispatch(ctx))
	if n, err := e.deps.Store.PendingCount(ctx); err == nil {
		e.met.outbox.Set(float64(n))
	}
}

// dispatch produces the outbox until it is empty or fails.
func (e *Evaluator) dispatch(ctx context.Context) error {
	e.dispatchMu.Lock()
	defer e.dispatchMu.Unlock()
	for {
		events, notes, err := e.deps.Store.ProducePending(ctx, outboxBatch, e.produce)
		if err != nil {
			return err
		}
		e.met.notifications.Add(float64(notes))
		if events < outboxBatch {
			return nil
		}
	}
}

// produce writes ns to the notifications topic, keyed by user id, and
// waits for Kafka's acknowledgements, at most alert.produce_timeout.
func (e *Evaluator) produce(ctx context.Context, ns []schemas.Notification) error {
	pctx, cancel := context.WithTimeout(ctx, e.cfg.ProduceTimeout.Std())
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs error
	)
	for i := range ns {
		b, err := e.deps.Encoder.Encode(&ns[i])
		if err != nil {
			return fmt.Errorf("encoding notification %s: %w", ns[i].ID, err)
		}
		wg.Add(1)
		e.deps.Producer.Produce(pctx, pipeline.Record{Topic: e.deps.Topic, Key: []byte(ns[i].UserID), Value: b},
			func(err error) {
				defer wg.Done()
				if err != nil {
					mu.Lock()
					errs = errors.Join(errs, err)
					mu.Unlock()
				}
			})
	}
	wg.Wait()
	return errs
}

// DropPartitions implements pipeline.PartitionDropper: the series of the
// partitions lost are forgotten; their new owner rebuilds them.
func (e *Evaluator) DropPartitions(partitions map[string][]int32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for topic, ids := range partitions {
		for _, id := range ids {
			delete(e.parts, partKey{topic, id})
		}
	}
}

func (e *Evaluator) partition(k partKey) *partition {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.parts[k]
	if p == nil {
		p = &partition{series: map[seriesKey]*series{}}
		e.parts[k] = p
	}
	return p
}

// evaluateCompliance judges the compliance rules of every point.
func (e *Evaluator) evaluateCompliance(ctx context.Context) error {
	now := e.now()
	var errs []error
	for _, rule := range e.rules.Load().all {
		var (
			c   alerts.ComplianceCount
			err error
		)
		switch rule.Kind {
		case alerts.KindComplianceMissing:
			after := rule.Params.After
			if after <= 0 {
				after = e.deps.MissingAfter
			}
			c, err = e.deps.Store.ComplianceMissing(ctx, rule.Point, now.Add(-after))
		case alerts.KindComplianceRejected:
			c, err = e.deps.Store.ComplianceRejected(ctx, rule.Point, now.Add(-rule.Params.Within))
		default:
			continue
		}
		if errors.Is(err, alerts.ErrNoComplianceTable) {
			e.log.Debug("compliance rules skipped: table compliance_submissions does not exist yet")
			return nil
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n := float64(c.Count)
		obs := alerts.Observation{Firing: c.Count > 0, Value: &n, At: now, Details: map[string]any{"slots": strconv.Itoa(c.Count)}}
		if !c.Oldest.IsZero() {
			obs.Details["oldest_slot"] = c.Oldest.UTC().Format(time.RFC3339)
		}
		if _, err := e.observe(ctx, rule, "", obs); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

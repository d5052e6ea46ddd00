package alert

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/stackvps/stackvps/alerts"
	"github.com/stackvps/stackvps/schemas"
)

// seedLookback bounds how far back the readings table is searched for the
// latest reading of a data_gap series not seen in this run.
const seedLookback = 30 * 24 * time.Hour

// partKey names one input partition.
type partKey struct {
	topic string
	id    int32
}

// partition is the state built from one input partition. Its mutex guards
// every field; Process holds it for one record.
type partition struct {
	mu sync.Mutex
	// arrival, the arrival clock, is the latest received_at consumed.
	arrival time.Time
	// lastRecord is the processing time of the latest record consumed.
	lastRecord time.Time
	series     map[seriesKey]*series
}

type seriesKey struct{ point, variable string }

// series is what the per-reading rules remember of one point and variable.
type series struct {
	has       bool
	lastTime  time.Time // event time of the newest reading
	lastValue float64
	// lastArrival is the latest received_at of the series' readings.
	lastArrival time.Time
	// The current flat run (stuck): readings within the tolerance of each
	// other since runStart, runN of them.
	runStart       time.Time
	runMin, runMax float64
	runN           int
}

// advance returns the series after reading r (received at arrival) and
// whether r is a totalizer reset: flagged reset, or lower than the previous
// reading without the rollover flag. A reading not newer than the newest
// one (late, replayed) moves only lastArrival. The flat run uses the
// smallest tolerance of the variable's stuck rules; a value outside it
// starts a new run at that reading.
func (s *series) advance(r schemas.Reading, arrival time.Time, rules []alerts.Rule) (*series, bool) {
	n := *s
	if arrival.After(n.lastArrival) {
		n.lastArrival = arrival
	}
	if s.has && !r.Time.After(s.lastTime) {
		return &n, false
	}
	reset := r.Quality&flagReset != 0 || (s.has && r.Value < s.lastValue && r.Quality&flagRollover == 0)
	tol, stuck := 0.0, false
	for _, rule := range rules {
		if rule.Kind == alerts.KindStuck && rule.Variable == r.Variable {
			if !stuck || rule.Params.Tolerance < tol {
				tol = rule.Params.Tolerance
			}
			stuck = true
		}
	}
	if !s.has || max(s.runMax, r.Value)-min(s.runMin, r.Value) > tol {
		n.runStart, n.runMin, n.runMax, n.runN = r.Time, r.Value, r.Value, 1
	} else {
		n.runMin, n.runMax, n.runN = min(s.runMin, r.Value), max(s.runMax, r.Value), s.runN+1
	}
	n.has, n.lastTime, n.lastValue = true, r.Time, r.Value
	return &n, reset
}

// gapSeries is one series judged for data gaps, and the clock it is
// judged on.
type gapSeries struct {
	key   seriesKey
	last  time.Time // latest arrival (or stored reading time, when seeded)
	clock time.Time
}

// evaluateGaps judges the data_gap rules (see the package documentation
// for the clock).
func (e *Evaluator) evaluateGaps(ctx context.Context) error {
	rs := e.rules.Load()
	if len(rs.gap) == 0 {
		return nil
	}
	now := e.now()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	kafkaOK := e.deps.Producer.Ping(pctx) == nil
	cancel()
	gapPoints := map[string]bool{}
	for _, pt := range rs.gap {
		gapPoints[pt] = true
	}
	e.mu.Lock()
	parts := make([]*partition, 0, len(e.parts))
	for _, p := range e.parts {
		parts = append(parts, p)
	}
	started := e.started
	e.mu.Unlock()
	idle, tolerance := e.cfg.IdleAfter.Std(), e.cfg.LagTolerance.Std()
	var judged []gapSeries
	owned := map[seriesKey]bool{}
	lagging := false
	for _, p := range parts {
		p.mu.Lock()
		quiet := now.Sub(p.lastRecord) >= idle
		for k := range p.series {
			owned[k] = true
		}
		// The consumer lag in time: how far what the partition delivers
		// was received behind the processing clock, upstream stages'
		// lag included.
		if !quiet && now.Sub(p.arrival) > tolerance {
			lagging = true
			p.mu.Unlock()
			e.met.gapSkipped.WithLabelValues("lagging").Inc()
			continue
		}
		clock := p.arrival
		if quiet && kafkaOK && now.After(clock) {
			clock = now
		}
		for k, s := range p.series {
			if gapPoints[k.point] {
				judged = append(judged, gapSeries{key: k, last: s.lastArrival, clock: clock})
			}
		}
		p.mu.Unlock()
	}
	var errs []error
	seeded, err := e.seededSeries(ctx, rs, owned, now)
	if err != nil {
		errs = append(errs, err)
	}
	// Series not seen in this run are judged on the processing clock, and
	// only when nothing this stage consumes lags, Kafka answers, and the
	// stage has run idle_after (its first fetches had time to arrive).
	if !lagging && kafkaOK && now.Sub(started) >= idle {
		for _, g := range seeded {
			g.clock = now
			judged = append(judged, g)
		}
	} else if len(seeded) > 0 {
		e.met.gapSkipped.WithLabelValues("not_caught_up").Inc()
	}
	for _, g := range judged {
		for _, rule := range rs.byPoint[g.key.point] {
			if rule.Kind != alerts.KindDataGap || (rule.Variable != "" && rule.Variable != g.key.variable) {
				continue
			}
			gap := g.clock.Sub(g.last)
			secs := gap.Seconds()
			obs := alerts.Observation{Firing: gap > rule.Params.After, Value: &secs, Unit: "s", At: g.clock,
				Details: map[string]any{"after": rule.Params.After.String(), "last_reading_at": g.last.UTC().Format(time.RFC3339)}}
			if _, err := e.observe(ctx, rule, g.key.variable, obs); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// seededSeries returns the data_gap series this run has not seen a reading
// of, with the time of their latest stored reading: read once per point
// from the readings table, and read again for the series about to fire (the
// sink may have stored readings another replica consumed).
func (e *Evaluator) seededSeries(ctx context.Context, rs *ruleSet, owned map[seriesKey]bool, now time.Time) ([]gapSeries, error) {
	e.mu.Lock()
	var fresh []string
	for _, pt := range rs.gap {
		if !e.seededOK[pt] {
			fresh = append(fresh, pt)
		}
	}
	e.mu.Unlock()
	if len(fresh) > 0 {
		times, err := e.deps.Store.LatestTimes(ctx, fresh, now.Add(-seedLookback))
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		for _, st := range times {
			if k := (seriesKey{st.Point, st.Variable}); !owned[k] {
				e.seeded[k] = st.Time
			}
		}
		for _, pt := range fresh {
			e.seededOK[pt] = true
		}
		e.mu.Unlock()
	}
	e.mu.Lock()
	var out []gapSeries
	var stalePoints []string
	seenPoint := map[string]bool{}
	for k, t := range e.seeded {
		if owned[k] {
			delete(e.seeded, k)
			continue
		}
		out = append(out, gapSeries{key: k, last: t})
		if !seenPoint[k.point] {
			seenPoint[k.point] = true
			stalePoints = append(stalePoints, k.point)
		}
	}
	e.mu.Unlock()
	if len(out) == 0 {
		return nil, nil
	}
	times, err := e.deps.Store.LatestTimes(ctx, stalePoints, now.Add(-seedLookback))
	if err != nil {
		return nil, err
	}
	latest := map[seriesKey]time.Time{}
	for _, st := range times {
		latest[seriesKey{st.Point, st.Variable}] = st.Time
	}
	e.mu.Lock()
	for i := range out {
		if t := latest[out[i].key]; t.After(out[i].last) {
			out[i].last = t
			if _, ok := e.seeded[out[i].key]; ok {
				e.seeded[out[i].key] = t
			}
		}
	}
	e.mu.Unlock()
	return out, nil
}

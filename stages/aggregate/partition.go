package aggregate

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
)

// highSpacing thins the record-high offsets a partition remembers: one per
// second of arrival clock is enough, the held offset is then at most a second
// of records earlier than it could be.
const highSpacing = time.Second

// quietAfter is how long a partition must have returned no record before the
// processing-time clock moves its idle clock: a partition that is read but
// yields nothing is caught up, so its devices' silence is real, not lag.
const quietAfter = 10 * time.Second

// partKey names one input partition.
type partKey struct {
	topic string
	id    int32
}

// partition is the state built from one input partition. Its mutex guards
// every field; Process holds it for one record, Flush and HeldOffsets for the
// whole partition.
type partition struct {
	mu  sync.Mutex
	key partKey
	// start is the first offset consumed since the partition was assigned:
	// the committed offset, a record high by construction.
	start int64
	// pc, the arrival clock, is the latest received_at consumed from the
	// partition. It only moves with records, so a replay from a record high
	// (see highs) rebuilds it exactly.
	pc time.Time
	// highs are offsets, ascending, of records whose received_at was at
	// least every earlier one's (record highs), at most one per highSpacing.
	highs []high
	// latestHigh is the offset of the latest record high; -1 before any.
	latestHigh int64
	// lastRecord is the processing time of the latest record consumed.
	lastRecord time.Time
	points     map[string]*point
}

type high struct {
	off int64
	at  time.Time
}

// point is one catchment point's devices and open windows.
type point struct {
	devices map[string]*device
	windows map[int64]*window // by hour start, Unix seconds
}

// device is one device's watermark state.
type device struct {
	// wm, the device's event-time watermark, is the latest event time of the
	// readings accepted from it.
	wm time.Time
	// lastArrival is the latest received_at of its accepted readings.
	lastArrival time.Time
}

func newPartition(k partKey) *partition {
	return &partition{key: k, start: -1, latestHigh: -1, points: map[string]*point{}}
}

func (p *partition) point(code string) *point {
	pt := p.points[code]
	if pt == nil {
		pt = &point{devices: map[string]*device{}, windows: map[int64]*window{}}
		p.points[code] = pt
	}
	return pt
}

func (pt *point) window(start time.Time) *window {
	w := pt.windows[start.Unix()]
	if w == nil {
		w = newWindow(start)
		pt.windows[start.Unix()] = w
	}
	return w
}

// observe moves the arrival clock with one record's received_at and
// remembers the record if it is a record high.
func (p *partition) observe(off int64, arrival time.Time) {
	if p.latestHigh >= 0 && arrival.Before(p.pc) {
		return
	}
	p.pc = arrival
	p.latestHigh = off
	if n := len(p.highs); n == 0 || arrival.Sub(p.highs[n-1].at) >= highSpacing {
		p.highs = append(p.highs, high{off: off, at: arrival})
	}
}

// add applies one decoded reading consumed at offset off. It returns a
// pipeline.Permanent error for a reading the stage refuses (the runtime
// dead-letters the record).
func (p *partition) add(a *Aggregator, off int64, r *schemas.Reading, now time.Time) error {
	if p.start < 0 {
		p.start = off
	}
	p.lastRecord = now
	arrival := r.ReceivedAt
	if arrival.IsZero() {
		arrival = now
	}
	if arrival.After(now.Add(a.skew)) {
		a.met.readings.WithLabelValues("clock_skew").Inc()
		return pipeline.Permanent("clock_skew", fmt.Errorf("reading of %s/%s: received_at %s is %s ahead of the stage's clock (aggregate.clock_skew is %s)",
			r.Point, r.Device, arrival.UTC().Format(time.RFC3339), arrival.Sub(now).Round(time.Second), a.skew))
	}
	p.observe(off, arrival)
	if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
		a.met.readings.WithLabelValues("bad_value").Inc()
		return pipeline.Permanent("bad_value", fmt.Errorf("reading of %s/%s %s at %s: value %v is not a finite number",
			r.Point, r.Device, r.Variable, r.Time.UTC().Format(time.RFC3339), r.Value))
	}
	ref := arrival
	if now.Before(ref) {
		ref = now
	}
	if r.Time.After(ref.Add(a.skew)) {
		a.met.readings.WithLabelValues("clock_skew").Inc()
		return pipeline.Permanent("clock_skew", fmt.Errorf("device %s stamped a reading of %s %s, %s ahead of its reception (aggregate.clock_skew is %s)",
			r.Device, r.Point, r.Time.UTC().Format(time.RFC3339Nano), r.Time.Sub(ref).Round(time.Second), a.skew))
	}
	t := r.Time.UTC()
	hour := t.Truncate(time.Hour)
	if p.pc.After(a.deadline(hour)) {
		a.met.readings.WithLabelValues("too_late").Inc()
		a.met.late.WithLabelValues("too_late").Inc()
		return pipeline.Permanent("too_late", fmt.Errorf("reading of %s/%s %s at %s arrived %s, after its hour's state was released at %s (aggregate.allowed_lateness is %s)",
			r.Point, r.Device, r.Variable, t.Format(time.RFC3339), p.pc.UTC().Format(time.RFC3339), a.deadline(hour).UTC().Format(time.RFC3339), a.lateness))
	}
	pt := p.point(r.Point)
	s := sample{v: r.Value, q: r.Quality}
	if r.Variable == VariableTotalizer {
		s.roll = a.deps.TotalizerRollover[r.Provider]
	}
	w := pt.window(hour)
	added := w.add(w.readings, r.Variable, t, s, off, arrival)
	late := added && w.emitted > 0
	// The first minute of an hour is also the previous hour's slot bucket.
	if t.Sub(hour) < slotWidth && a.slotVars[r.Variable] {
		prev := hour.Add(-time.Hour)
		if !p.pc.After(a.deadline(prev)) {
			pw := pt.window(prev)
			if pw.add(pw.slot, r.Variable, t, s, off, arrival) {
				added = true
				late = late || pw.emitted > 0
			}
		}
	}
	d := pt.devices[r.Device]
	if d == nil {
		d = &device{}
		pt.devices[r.Device] = d
	}
	if t.After(d.wm) {
		d.wm = t
	}
	if arrival.After(d.lastArrival) {
		d.lastArrival = arrival
	}
	switch {
	case !added:
		a.met.readings.WithLabelValues("duplicate").Inc()
	case late:
		a.met.readings.WithLabelValues("accepted").Inc()
		a.met.late.WithLabelValues("corrected").Inc()
	default:
		a.met.readings.WithLabelValues("accepted").Inc()
	}
	return nil
}

// flush closes, emits and releases the partition's windows at processing
// time now (see the package documentation for the rules) and returns the
// records to produce.
func (p *partition) flush(a *Aggregator, now time.Time) ([]pipeline.Record, error) {
	idleClock := p.pc
	if now.Sub(p.lastRecord) >= quietAfter {
		if q := now.Add(-quietAfter); q.After(idleClock) {
			idleClock = q
		}
	}
	var (
		out  []pipeline.Record
		errs []error
	)
	codes := make([]string, 0, len(p.points))
	for code := range p.points {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	for _, code := range codes {
		pt := p.points[code]
		hours := make([]int64, 0, len(pt.windows))
		for h := range pt.windows {
			hours = append(hours, h)
		}
		slices.Sort(hours)
		for _, h := range hours {
			w := pt.windows[h]
			expired := p.pc.After(a.deadline(w.start))
			if !w.closed {
				passed, byIdle := pt.passed(w.end().Add(slotWidth), idleClock, a.idle)
				switch {
				case passed:
					w.closed = true
					if byIdle {
						a.met.closes.WithLabelValues("idle").Inc()
					} else {
						a.met.closes.WithLabelValues("watermark").Inc()
					}
				case expired:
					w.closed = true
					a.met.closes.WithLabelValues("lateness").Inc()
				}
			}
			if w.closed && w.n != w.emitted {
				rec, err := a.record(code, w)
				if err != nil {
					errs = append(errs, err)
				} else {
					out = append(out, rec)
					a.met.emitted.Inc()
					if w.emitted > 0 {
						a.met.corrections.Inc()
					} else {
						a.met.delay.Observe(now.Sub(w.end()).Seconds())
					}
				}
				// A record that cannot be encoded now never will be: it is
				// counted and logged, not retried forever.
				w.emitted = w.n
			}
			if expired && w.closed && w.n == w.emitted {
				delete(pt.windows, h)
			}
		}
		forget := a.idle + a.lateness + time.Hour + slotWidth
		for id, d := range pt.devices {
			if idleClock.Sub(d.lastArrival) > forget {
				delete(pt.devices, id)
			}
		}
		if len(pt.windows) == 0 && len(pt.devices) == 0 {
			delete(p.points, code)
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("partition %s/%d: %w", p.key.topic, p.key.id, errors.Join(errs...))
	}
	return out, nil
}

// passed reports whether every device of the point passed closeAt: its
// watermark did, or it is idle (no arrival for idle on idleClock) and either
// another device of the point is active (an idle device holds nobody back)
// or idleClock minus idle passed closeAt (the whole point fell silent: its
// windows close idle after their end). byIdle says an idle device was
// passed over.
func (pt *point) passed(closeAt, idleClock time.Time, idle time.Duration) (passed, byIdle bool) {
	isIdle := func(d *device) bool { return idleClock.Sub(d.lastArrival) >= idle }
	anyActive := false
	for _, d := range pt.devices {
		if !isIdle(d) {
			anyActive = true
			break
		}
	}
	for _, d := range pt.devices {
		if !d.wm.Before(closeAt) {
			continue
		}
		if isIdle(d) && (anyActive || !idleClock.Add(-idle).Before(closeAt)) {
			byIdle = true
			continue
		}
		return false, false
	}
	return true, byIdle
}

// held returns the offset the partition must not be committed past, and
// false when it has consumed nothing yet. It is the latest record high at
// or before the first record of every open window, and it forgets the
// record highs before it.
func (p *partition) held() (int64, bool) {
	if p.latestHigh < 0 {
		return 0, false
	}
	bound := int64(math.MaxInt64)
	for _, pt := range p.points {
		for _, w := range pt.windows {
			if w.first >= 0 && w.first < bound {
				bound = w.first
			}
		}
	}
	if p.latestHigh <= bound {
		// Remember it, so that a window opened later can still be held at
		// it even though the thinning skipped it.
		if n := len(p.highs); n == 0 || p.highs[n-1].off != p.latestHigh {
			p.highs = append(p.highs, high{off: p.latestHigh, at: p.pc})
		}
		p.pruneHighs(p.latestHigh)
		return p.latestHigh, true
	}
	i := sort.Search(len(p.highs), func(i int) bool { return p.highs[i].off > bound }) - 1
	if i < 0 {
		// Cannot happen: the first record consumed is remembered and no
		// window starts before it. Stay safe anyway.
		return p.start, true
	}
	o := p.highs[i].off
	p.pruneHighs(o)
	return o, true
}

// pruneHighs forgets the record highs before o: the held offset never moves
// back while the partition is owned.
func (p *partition) pruneHighs(o int64) {
	i := sort.Search(len(p.highs), func(i int) bool { return p.highs[i].off >= o })
	if i > 0 {
		p.highs = slices.Delete(p.highs, 0, i)
	}
}

// counts returns the number of open windows and tracked devices.
func (p *partition) counts() (windows, devices int) {
	for _, pt := range p.points {
		windows += len(pt.windows)
		devices += len(pt.devices)
	}
	return windows, devices
}

package timescale

import "time"

// DayBucket exposes the refresher's day bucketing to the external tests: the
// start of the local day of t in zone and the start of the next one.
func DayBucket(zone string, t time.Time) (time.Time, time.Time) {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		panic(err)
	}
	b := bucketer{loc}
	f := b.floor(Rollup1d, t)
	return f, b.next(Rollup1d, f)
}

// RangeSet exposes rangeSet to the external tests.
type RangeSet struct{ s rangeSet }

// NewRangeSet returns an empty set merging ranges closer than gap, holding at
// most limit ranges.
func NewRangeSet(gap time.Duration, limit int) *RangeSet {
	return &RangeSet{rangeSet{gap: gap, limit: limit}}
}

// Add adds [from, to).
func (r *RangeSet) Add(from, to time.Time) { r.s.add(timeRange{from, to}) }

// Remove removes [from, to).
func (r *RangeSet) Remove(from, to time.Time) { r.s.remove(timeRange{from, to}) }

// Ranges returns the ranges, sorted.
func (r *RangeSet) Ranges() [][2]time.Time {
	var out [][2]time.Time
	for _, x := range r.s.rs {
		out = append(out, [2]time.Time{x.from, x.to})
	}
	return out
}

// PassDelay exposes passDelay.
var PassDelay = passDelay

package aggregate

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Canonical variables a compliance record reports.
const (
	VariableFlow      = "flow"
	VariableTotalizer = "totalizer"
	VariableLevel     = "level"
)

// Quality bits the normalize stage sets on totalizer readings (the values of
// normalize.FlagRollover and normalize.FlagReset; a test keeps them equal).
const (
	qualityRollover int32 = 4
	qualityReset    int32 = 8
)

// slotWidth is the width of the bucket at a slot instant: the value "at"
// 14:00:00 is the earliest reading in [14:00:00, 14:01:00).
const slotWidth = time.Minute

// sample is one reading a window keeps.
type sample struct {
	v    float64
	q    int32
	roll float64 // the counter maximum of the reading's provider (totalizer); 0 when unknown
}

// series holds one variable's readings, keyed by event time in Unix
// microseconds (the resolution of the Avro timestamps): a second reading of
// the same variable at the same time is a duplicate and is ignored, so the
// first one consumed wins, as in the readings table (ON CONFLICT DO NOTHING).
type series map[int64]sample

// sortedKeys returns the series' times in ascending order.
func (s series) sortedKeys() []int64 {
	keys := make([]int64, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// window is one point's hour [start, start+1h): its readings of every
// variable, and the readings of its slot bucket [end, end+slotWidth) of the
// variables the record takes from the slot instant.
type window struct {
	start    time.Time
	readings map[string]series
	slot     map[string]series
	// n counts the distinct readings incorporated (readings plus slot): it
	// is the version of the record built from this state.
	n int32
	// emitted is the version last emitted; 0 before the first emission.
	emitted int32
	// closed is set once the window may be emitted (every device passed its
	// end, went idle, or the lateness deadline passed); it stays set.
	closed bool
	// first is the offset of the first record incorporated: the offset the
	// partition holds while the window lives.
	first int64
	// maxReceived is the latest received_at of the readings incorporated:
	// the record's emitted_at.
	maxReceived time.Time
}

func newWindow(start time.Time) *window {
	return &window{start: start, readings: map[string]series{}, slot: map[string]series{}, first: -1}
}

// end is the end of the window's hour, exclusive: its slot instant.
func (w *window) end() time.Time { return w.start.Add(time.Hour) }

// add incorporates one reading into m (w.readings or w.slot) and reports
// whether it was new.
func (w *window) add(m map[string]series, variable string, t time.Time, s sample, off int64, received time.Time) bool {
	ser := m[variable]
	if ser == nil {
		ser = series{}
		m[variable] = ser
	}
	k := t.UnixMicro()
	if _, dup := ser[k]; dup {
		return false
	}
	ser[k] = s
	w.n++
	if w.first < 0 || off < w.first {
		w.first = off
	}
	if received.After(w.maxReceived) {
		w.maxReceived = received
	}
	return true
}

// slotSample returns the earliest slot reading of variable: the value at the
// slot instant.
func (w *window) slotSample(variable string) (sample, bool) {
	ser := w.slot[variable]
	if len(ser) == 0 {
		return sample{}, false
	}
	first := true
	var bestK int64
	for k := range ser {
		if first || k < bestK {
			bestK, first = k, false
		}
	}
	return ser[bestK], true
}

// mean returns the mean of variable's readings in the hour, summed in time
// order so that the same readings always give the same bits.
func (w *window) mean(variable string) (float64, bool) {
	ser := w.readings[variable]
	if len(ser) == 0 {
		return 0, false
	}
	var sum float64
	for _, k := range ser.sortedKeys() {
		sum += ser[k].v
	}
	return sum / float64(len(ser)), true
}

// received counts the expected-interval slots of the hour, aligned on its
// start, that hold at least one reading of a compliance variable.
func (w *window) received(interval time.Duration) int32 {
	start := w.start.UnixMicro()
	step := interval.Microseconds()
	seen := map[int64]struct{}{}
	for _, v := range []string{VariableFlow, VariableTotalizer, VariableLevel} {
		for k := range w.readings[v] {
			seen[(k-start)/step] = struct{}{}
		}
	}
	return int32(len(seen))
}

// VariableStats are one variable's statistics over one hour.
type VariableStats struct {
	// Count is the number of distinct readings (duplicates counted once).
	Count int `json:"count"`
	// Min, Max and Avg are over the readings of the hour.
	Min float64 `json:"min"`
	Max float64 `json:"max"`
	Avg float64 `json:"avg"`
	// Last is the value of the latest reading of the hour, at LastTime.
	Last     float64   `json:"last"`
	LastTime time.Time `json:"last_time"`
	// Delta is set for the totalizer only: the volume counted over the hour,
	// from its first reading through the reading at the slot instant (the
	// start of the next hour) when there is one, with resets and rollovers
	// handled (see the package documentation).
	Delta *float64 `json:"delta,omitempty"`
}

// HourStats are the statistics of every variable of one point over one hour,
// by variable name: the JSON value of header HeaderHourStats on
// compliance.records.
type HourStats map[string]VariableStats

// ParseHourStats decodes the value of header HeaderHourStats.
func ParseHourStats(b []byte) (HourStats, error) {
	var s HourStats
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing %s header: %w", HeaderHourStats, err)
	}
	return s, nil
}

// stats computes the window's statistics.
func (w *window) stats() HourStats {
	out := make(HourStats, len(w.readings))
	for variable, ser := range w.readings {
		if len(ser) == 0 {
			continue
		}
		keys := ser.sortedKeys()
		st := VariableStats{Count: len(keys), Min: ser[keys[0]].v, Max: ser[keys[0]].v}
		var sum float64
		for _, k := range keys {
			v := ser[k].v
			sum += v
			st.Min = min(st.Min, v)
			st.Max = max(st.Max, v)
		}
		st.Avg = sum / float64(len(keys))
		lastK := keys[len(keys)-1]
		st.Last, st.LastTime = ser[lastK].v, time.UnixMicro(lastK).UTC()
		if variable == VariableTotalizer {
			d := totalizerDelta(ser, keys, w.slot[VariableTotalizer])
			st.Delta = &d
		}
		out[variable] = st
	}
	return out
}

// totalizerDelta sums the increments between consecutive readings (in time
// order) of the hour and, when there is one, the reading at the slot instant.
func totalizerDelta(ser series, keys []int64, slot series) float64 {
	var d float64
	prev := ser[keys[0]]
	for _, k := range keys[1:] {
		cur := ser[k]
		d += increment(prev, cur)
		prev = cur
	}
	if len(slot) > 0 {
		sk := slot.sortedKeys()[0]
		d += increment(prev, slot[sk])
	}
	return d
}

// increment is the volume counted between two consecutive totalizer
// readings. A reading flagged reset, or a drop not flagged as a rollover,
// restarts the count from the new value (the step adds nothing: no volume is
// invented across a meter reset or replacement). A drop flagged rollover adds
// what the counter ran up to its maximum plus the new value, when the
// provider's maximum is known (normalize.totalizer_rollover), and nothing
// otherwise.
func increment(prev, cur sample) float64 {
	switch {
	case cur.q&qualityReset != 0:
		return 0
	case cur.v >= prev.v:
		return cur.v - prev.v
	case cur.q&qualityRollover != 0 && cur.roll > 0:
		return cur.roll - prev.v + cur.v
	default:
		return 0
	}
}

package normalize

import (
	"math"
	"sync"
	"time"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/providers"
)

// Quality flags, the bits of readings.quality (0 is a good reading). The
// quality_flags table lists them for SQL users.
const (
	// FlagOutOfRange: the value is outside normalize.ranges for its variable.
	FlagOutOfRange int32 = 1 << iota
	// FlagSpike: the value jumped by more than normalize.spike from the
	// device's previous reading.
	FlagSpike
	// FlagRollover: the totalizer wrapped around its counter maximum.
	FlagRollover
	// FlagReset: the totalizer dropped without wrapping (meter reset or
	// replaced).
	FlagReset
	// FlagDerived: the value was computed (flow from the totalizer), not
	// measured.
	FlagDerived
	// FlagStale: the value repeated exactly normalize.stale_after times or
	// more: the sensor may be stuck.
	FlagStale

	maxFlag = int(FlagStale)
)

// FlagNames names each flag, for metrics and docs.
var FlagNames = map[int32]string{
	FlagOutOfRange: "out_of_range",
	FlagSpike:      "spike",
	FlagRollover:   "totalizer_rollover",
	FlagReset:      "totalizer_reset",
	FlagDerived:    "derived",
	FlagStale:      "stale",
}

// assessor keeps, per device and variable, the last reading in event-time
// order, and flags each new reading against it. The state lives in memory:
// after a restart the first reading of each series is judged on its own.
// Readings older than the last one (late or replayed) are flagged for range
// only and do not move the state. The state is sharded by device, so
// partitions (keyed by device) seldom wait for each other.
type assessor struct {
	cfg config.Normalize
	// rules are cfg's ranges, spike thresholds and stale counts by
	// variable, looked up once per reading instead of in three maps.
	rules  []variableRules
	shards [assessorShards]assessorShard
}

const assessorShards = 64

type assessorShard struct {
	mu sync.Mutex
	// devices holds each device's series: a payload's readings are of one
	// device, so one map lookup and one lock serve all of them.
	devices map[string]*deviceSeries
	_       [48]byte // one shard per cache line
}

// deviceSeries is one device's series, one per variable (a handful).
type deviceSeries struct {
	series []seriesState
}

type seriesState struct {
	variable string
	t        time.Time
	v        float64
	repeats  int
}

// variableRules are the configured checks of one variable.
type variableRules struct {
	variable string
	rng      config.Range
	hasRange bool
	spike    float64
	hasSpike bool
	stale    int
	hasStale bool
}

func newAssessor(cfg config.Normalize) *assessor {
	a := &assessor{cfg: cfg}
	for i := range a.shards {
		a.shards[i].devices = map[string]*deviceSeries{}
	}
	rule := func(variable string) *variableRules {
		for i := range a.rules {
			if a.rules[i].variable == variable {
				return &a.rules[i]
			}
		}
		a.rules = append(a.rules, variableRules{variable: variable})
		return &a.rules[len(a.rules)-1]
	}
	for v, rg := range cfg.Ranges {
		r := rule(v)
		r.rng, r.hasRange = rg, true
	}
	for v, thr := range cfg.Spike {
		r := rule(v)
		r.spike, r.hasSpike = thr, true
	}
	for v, n := range cfg.StaleAfter {
		r := rule(v)
		r.stale, r.hasStale = n, true
	}
	return a
}

// rulesOf returns the rules of variable; none configured is the zero value.
func (a *assessor) rulesOf(variable string) variableRules {
	for i := range a.rules {
		if a.rules[i].variable == variable {
			return a.rules[i]
		}
	}
	return variableRules{}
}

// shard returns the shard of device (FNV-1a).
func (a *assessor) shard(device string) *assessorShard {
	h := uint32(2166136261)
	for i := 0; i < len(device); i++ {
		h ^= uint32(device[i])
		h *= 16777619
	}
	return &a.shards[h%assessorShards]
}

// state returns the series of variable, nil if there is none yet.
func (ds *deviceSeries) state(variable string) *seriesState {
	for i := range ds.series {
		if ds.series[i].variable == variable {
			return &ds.series[i]
		}
	}
	return nil
}

// assessed is a reading with its quality.
type assessed struct {
	providers.Reading
	quality int32
}

// assess flags the readings of one payload and appends a derived flow when
// the payload has a totalizer but no flow.
func (a *assessor) assess(provider string, rs []providers.Reading) []assessed {
	return a.appendAssessed(make([]assessed, 0, len(rs)+1), provider, rs)
}

// appendAssessed is assess appending to dst. Consecutive readings of one
// device are assessed under one lock of its shard.
func (a *assessor) appendAssessed(dst []assessed, provider string, rs []providers.Reading) []assessed {
	var (
		sh  *assessorShard
		ds  *deviceSeries
		dev string
	)
	for _, r := range rs {
		if sh == nil || r.Device != dev {
			if sh != nil {
				sh.mu.Unlock()
			}
			dev = r.Device
			sh = a.shard(dev)
			sh.mu.Lock()
			ds = sh.devices[dev]
			if ds == nil {
				ds = &deviceSeries{}
				sh.devices[dev] = ds
			}
		}
		rules := a.rulesOf(r.Variable)
		q := rules.rangeFlag(r.Value)
		st := ds.state(r.Variable)
		switch {
		case st == nil:
			ds.series = append(ds.series, seriesState{variable: r.Variable, t: r.Time, v: r.Value, repeats: 1})
		case r.Time.After(st.t):
			delta := r.Value - st.v
			if rules.hasSpike && math.Abs(delta) > rules.spike && r.Variable != "totalizer" {
				q |= FlagSpike
			}
			if r.Variable == "totalizer" && delta < 0 {
				rollMax := a.cfg.TotalizerRollover[provider]
				if rollMax > 0 && st.v >= 0.9*rollMax {
					q |= FlagRollover
					delta += rollMax
				} else {
					q |= FlagReset
				}
			}
			if r.Variable == "totalizer" && !hasFlow(rs, r.Device) && q&FlagReset == 0 {
				if dt := r.Time.Sub(st.t).Seconds(); dt > 0 {
					flow := delta * 1000 / dt // m3 over seconds, in L/s
					dst = append(dst, assessed{
						Reading: providers.Reading{Device: r.Device, Time: r.Time, Variable: "flow", Value: flow, Unit: "L/s"},
						quality: FlagDerived | a.rulesOf("flow").rangeFlag(flow),
					})
				}
			}
			if r.Value == st.v {
				st.repeats++
			} else {
				st.repeats = 1
			}
			if rules.hasStale && st.repeats >= rules.stale {
				q |= FlagStale
			}
			st.t, st.v = r.Time, r.Value
		}
		dst = append(dst, assessed{Reading: r, quality: q})
	}
	if sh != nil {
		sh.mu.Unlock()
	}
	return dst
}

// hasFlow reports whether the payload rs has a flow reading of device.
func hasFlow(rs []providers.Reading, device string) bool {
	for i := range rs {
		if rs[i].Variable == "flow" && rs[i].Device == device {
			return true
		}
	}
	return false
}

// rangeFlag returns FlagOutOfRange when v is outside the variable's range.
func (r variableRules) rangeFlag(v float64) int32 {
	if r.hasRange && (v < r.rng.Min || v > r.rng.Max) {
		return FlagOutOfRange
	}
	return 0
}

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
	cfg    config.Normalize
	shards [assessorShards]assessorShard
}

const assessorShards = 64

type assessorShard struct {
	mu   sync.Mutex
	last map[seriesKey]*seriesState
	_    [48]byte // one shard per cache line
}

type seriesKey struct{ device, variable string }

type seriesState struct {
	t       time.Time
	v       float64
	repeats int
}

func newAssessor(cfg config.Normalize) *assessor {
	a := &assessor{cfg: cfg}
	for i := range a.shards {
		a.shards[i].last = map[seriesKey]*seriesState{}
	}
	return a
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

// appendAssessed is assess appending to dst.
func (a *assessor) appendAssessed(dst []assessed, provider string, rs []providers.Reading) []assessed {
	for _, r := range rs {
		q := a.rangeFlag(r.Variable, r.Value)
		key := seriesKey{r.Device, r.Variable}
		sh := a.shard(r.Device)
		sh.mu.Lock()
		st := sh.last[key]
		switch {
		case st == nil:
			sh.last[key] = &seriesState{t: r.Time, v: r.Value, repeats: 1}
		case r.Time.After(st.t):
			delta := r.Value - st.v
			if thr, ok := a.cfg.Spike[r.Variable]; ok && math.Abs(delta) > thr && r.Variable != "totalizer" {
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
						quality: FlagDerived | a.rangeFlag("flow", flow),
					})
				}
			}
			if r.Value == st.v {
				st.repeats++
			} else {
				st.repeats = 1
			}
			if n, ok := a.cfg.StaleAfter[r.Variable]; ok && st.repeats >= n {
				q |= FlagStale
			}
			st.t, st.v = r.Time, r.Value
		}
		sh.mu.Unlock()
		dst = append(dst, assessed{Reading: r, quality: q})
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

func (a *assessor) rangeFlag(variable string, v float64) int32 {
	if rg, ok := a.cfg.Ranges[variable]; ok && (v < rg.Min || v > rg.Max) {
		return FlagOutOfRange
	}
	return 0
}

package normalize

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/providers"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func rd(device, variable string, sec int, v float64) providers.Reading {
	return providers.Reading{Device: device, Time: t0.Add(time.Duration(sec) * time.Second), Variable: variable, Value: v}
}

func TestAssessFlags(t *testing.T) {
	cfg := config.Default().Normalize
	cfg.StaleAfter = map[string]int{"level": 3}
	type step struct {
		provider string
		in       []providers.Reading
		want     []int32 // quality of each output, in order
		derived  []float64
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"range", []step{
			{"p", []providers.Reading{rd("d", "flow", 0, 200000), rd("d", "level", 0, -20), rd("d", "level", 1, 10)}, []int32{FlagOutOfRange, FlagOutOfRange, FlagSpike}, nil},
		}},
		{"spike on the device's previous reading only", []step{
			{"p", []providers.Reading{rd("a", "flow", 0, 10), rd("b", "flow", 0, 900)}, []int32{0, 0}, nil},
			{"p", []providers.Reading{rd("a", "flow", 1, 700)}, []int32{FlagSpike}, nil},
			{"p", []providers.Reading{rd("b", "flow", 1, 899)}, []int32{0}, nil},
		}},
		{"totalizer rollover vs reset, and derived flow", []step{
			{"lorawan-ttn", []providers.Reading{rd("w", "totalizer", 0, 4294967.0)}, []int32{0}, nil},
			// 0.296 m3 to the wrap plus 0.204 after it in 10 s: 50 L/s.
			{"lorawan-ttn", []providers.Reading{rd("w", "totalizer", 10, 0.204)}, []int32{FlagDerived, FlagRollover}, []float64{50}},
			{"lorawan-ttn", []providers.Reading{rd("w", "totalizer", 20, 0.100)}, []int32{FlagReset}, nil},
			{"lorawan-ttn", []providers.Reading{rd("w", "totalizer", 30, 0.200)}, []int32{FlagDerived, 0}, []float64{10}},
		}},
		{"no derived flow when the device sends flow", []step{
			{"p", []providers.Reading{rd("f", "totalizer", 0, 100), rd("f", "flow", 0, 5)}, []int32{0, 0}, nil},
			{"p", []providers.Reading{rd("f", "totalizer", 10, 101), rd("f", "flow", 10, 6)}, []int32{0, 0}, nil},
		}},
		{"stale after 3 equal values", []step{
			{"p", []providers.Reading{rd("s", "level", 0, 7)}, []int32{0}, nil},
			{"p", []providers.Reading{rd("s", "level", 1, 7)}, []int32{0}, nil},
			{"p", []providers.Reading{rd("s", "level", 2, 7)}, []int32{FlagStale}, nil},
			{"p", []providers.Reading{rd("s", "level", 3, 7.01)}, []int32{0}, nil},
		}},
		{"late readings do not move the state", []step{
			{"p", []providers.Reading{rd("l", "flow", 100, 10)}, []int32{0}, nil},
			{"p", []providers.Reading{rd("l", "flow", 50, 900)}, []int32{0}, nil},
			{"p", []providers.Reading{rd("l", "flow", 101, 11)}, []int32{0}, nil},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAssessor(cfg)
			for i, st := range tc.steps {
				out := a.assess(st.provider, st.in)
				var got []int32
				var derived []float64
				for _, o := range out {
					got = append(got, o.quality)
					if o.quality&FlagDerived != 0 {
						require.Equal(t, "flow", o.Variable)
						require.Equal(t, "L/s", o.Unit)
						derived = append(derived, o.Value)
					}
				}
				require.Equal(t, st.want, got, "step %d", i)
				require.Len(t, derived, len(st.derived), "step %d", i)
				for j := range derived {
					require.InDelta(t, st.derived[j], derived[j], 1e-6, "step %d", i)
				}
			}
		})
	}
}

// The quality_flags table (migration 0003) must describe exactly these bits.
func TestFlagsMatchTheQualityFlagsTable(t *testing.T) {
	sql, err := os.ReadFile("../../sinks/timescale/migrations/0003_quality_flags.sql")
	require.NoError(t, err)
	for bit, name := range FlagNames {
		require.Regexp(t, fmt.Sprintf(`\(%d,\s+'%s'`, bit, name), string(sql))
	}
}

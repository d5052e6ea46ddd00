package normalize

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// parseUTC agrees with time.Parse(time.RFC3339Nano) on whatever it accepts,
// and leaves everything else to it.
func TestParseUTCAgreesWithTimeParse(t *testing.T) {
	cases := []string{
		"2026-11-26T23:59:28.123456789Z", "2026-11-26T23:59:28Z", "2026-11-26T23:59:28.5Z",
		"2026-11-26T23:59:28.120Z", "2024-02-29T00:00:00Z", "2026-02-29T00:00:00Z", "2026-02-30T00:00:00Z",
		"2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-11-00T00:00:00Z", "2026-11-26T24:00:00Z",
		"2026-11-26T23:60:00Z", "2026-11-26T23:59:60Z", "2026-11-26T23:59:28.Z", "2026-11-26T23:59:28.1234567890Z",
		"2026-11-26T23:59:28+01:00", "2026-11-26T23:59:28.5+01:00", "2026-11-26 23:59:28Z", "2026-11-26T23:59:2aZ",
		"2026-11-26T23:59:28,5Z", "2026-11-26T23:59:28.5z", "0000-01-01T00:00:00Z", "", "Z", "2026-11-26",
		"2026-11-26T23:59:28.-5Z", "+026-11-26T23:59:28Z",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		ts := time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9)).UTC()
		cases = append(cases, ts.Format(time.RFC3339Nano), ts.Format(time.RFC3339), ts.Format("2006-01-02T15:04:05.000Z"))
	}
	for _, c := range cases {
		got, ok := parseUTC([]byte(c))
		want, err := time.Parse(time.RFC3339Nano, c)
		if !ok {
			continue // the caller falls back to time.Parse
		}
		require.NoError(t, err, "parseUTC accepted %q", c)
		require.True(t, want.Equal(got), "%q: %v, time.Parse says %v", c, got, want)
		require.Equal(t, want.Location(), got.Location(), c)
	}
	for _, c := range []string{"2026-11-26T23:59:28.123456789Z", "2026-11-26T23:59:28Z"} {
		_, ok := parseUTC([]byte(c))
		require.True(t, ok, "the bridge's format takes the fast path: %q", c)
	}
	require.Zero(t, testing.AllocsPerRun(100, func() { parseUTC([]byte("2026-11-26T23:59:28.123456789Z")) }))
}

func TestFlagCountersCoverEveryFlag(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	require.Len(t, m.flagCounters, len(FlagNames))
	for _, f := range m.flagCounters {
		f.c.Inc()
		require.Equal(t, 1.0, testutil.ToFloat64(m.flags.WithLabelValues(FlagNames[f.bit])))
	}
	p := &variableCounters{vec: m.readings, provider: "p"}
	q := &variableCounters{vec: m.readings, provider: "q"}
	p.get("flow").Inc()
	p.get("flow").Inc()
	p.get("level").Inc()
	q.get("flow").Inc()
	require.Equal(t, 2.0, testutil.ToFloat64(m.readings.WithLabelValues("p", "flow")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.readings.WithLabelValues("p", "level")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.readings.WithLabelValues("q", "flow")))
}

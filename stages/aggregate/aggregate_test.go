package aggregate_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/aggregate"
	"github.com/stackvps/stackvps/stages/normalize"
)

func cfgWith(f func(*config.Aggregate)) config.Aggregate {
	c := config.Default().Aggregate
	if f != nil {
		f(&c)
	}
	return c
}

func TestQualityBitsMatchNormalize(t *testing.T) {
	// The aggregate package keeps its own copy to avoid depending on the
	// normalize stage; the values are a contract of readings.quality.
	require.Equal(t, int32(4), normalize.FlagRollover)
	require.Equal(t, int32(8), normalize.FlagReset)
}

func TestNewValidates(t *testing.T) {
	rc, cc := codecs(t)
	deps := func() aggregate.Deps {
		return aggregate.Deps{Decoder: rc, Encoder: cc, Registerer: prometheus.NewRegistry(),
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	tests := []struct {
		name    string
		cfg     config.Aggregate
		deps    aggregate.Deps
		wantErr string
	}{
		{name: "defaults", cfg: cfgWith(nil), deps: deps()},
		{name: "mean", cfg: cfgWith(func(c *config.Aggregate) { c.ValueMode = "mean" }), deps: deps()},
		{name: "bad mode", cfg: cfgWith(func(c *config.Aggregate) { c.ValueMode = "median" }), deps: deps(), wantErr: "aggregate.value_mode"},
		{name: "zero lateness", cfg: cfgWith(func(c *config.Aggregate) { c.AllowedLateness = 0 }), deps: deps(), wantErr: "aggregate.allowed_lateness"},
		{name: "interval above an hour", cfg: cfgWith(func(c *config.Aggregate) { c.ExpectedInterval = config.Duration(2 * time.Hour) }), deps: deps(), wantErr: "aggregate.expected_interval"},
		{name: "no encoder", cfg: cfgWith(nil), deps: func() aggregate.Deps { d := deps(); d.Encoder = nil; return d }(), wantErr: "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := aggregate.New(tt.cfg, tt.deps)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// TestInstantAndMean checks the slot instant (the earliest reading of the
// minute bucket at the end of the hour) against the hour's mean.
func TestInstantAndMean(t *testing.T) {
	hour := func(slot bool) []schemas.Reading {
		var rs []schemas.Reading
		rs = append(rs, minutes("P", "d", "flow", t0, 60, func(i int) float64 { return float64(i) })...)
		rs = append(rs, minutes("P", "d", "totalizer", t0, 60, func(i int) float64 { return 1000 + float64(i) })...)
		rs = append(rs, minutes("P", "d", "level", t0, 60, func(i int) float64 { return 20 + float64(i)/10 })...)
		end := t0.Add(time.Hour)
		if slot {
			// Two readings in the slot bucket [14:00, 14:01): the earliest is
			// the value at the instant.
			rs = append(rs, rd("P", "d", "flow", end.Add(30*time.Second), 98), rd("P", "d", "flow", end, 99),
				rd("P", "d", "totalizer", end, 1060), rd("P", "d", "totalizer", end.Add(30*time.Second), 1061),
				rd("P", "d", "level", end, 26), rd("P", "d", "level", end.Add(30*time.Second), 27))
		}
		// The next minute closes the hour; it is no slot reading.
		rs = append(rs, rd("P", "d", "flow", end.Add(time.Minute), 97), rd("P", "d", "totalizer", end.Add(time.Minute), 1062))
		return rs
	}
	tests := []struct {
		name                   string
		mode                   string
		slot                   bool
		flow, level, totalizer *float64
		version                int32
		delta                  float64
	}{
		{name: "instant", mode: "instant", slot: true, flow: ptr(99), level: ptr(26), totalizer: ptr(1060), version: 180 + 6, delta: 60},
		{name: "mean", mode: "mean", slot: true, flow: ptr(29.5), level: ptr(22.95), totalizer: ptr(1060), version: 180 + 2, delta: 60},
		{name: "instant without slot reading is null", mode: "instant", slot: false, version: 180, delta: 59},
		{name: "mean without slot reading", mode: "mean", slot: false, flow: ptr(29.5), level: ptr(22.95), version: 180, delta: 59},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfgWith(func(c *config.Aggregate) { c.ValueMode = tt.mode }))
			h.mustFeed(0, hour(tt.slot)...)
			e := only(t, h.flush(t0.Add(time.Hour+2*time.Minute)), "P", t0)
			r := e.rec
			require.Equal(t, "P|hourly", e.key)
			require.Equal(t, aggregate.Source, r.Source)
			require.Equal(t, t0, r.PeriodStart.UTC())
			require.Equal(t, t0.Add(time.Hour), r.PeriodEnd.UTC())
			require.Equal(t, tt.mode, r.ValueMode)
			require.Equal(t, tt.version, r.Version)
			requireFloatPtr(t, tt.flow, r.Flow, "flow")
			requireFloatPtr(t, tt.level, r.Level, "level")
			requireFloatPtr(t, tt.totalizer, r.Totalizer, "totalizer")
			require.Equal(t, int32(60), r.Expected)
			require.Equal(t, int32(60), r.Received)
			st := e.hourStats(t)
			require.Equal(t, aggregate.VariableStats{Count: 60, Min: 0, Max: 59, Avg: 29.5, Last: 59,
				LastTime: t0.Add(59 * time.Minute)}, st["flow"])
			require.NotNil(t, st["totalizer"].Delta)
			require.InDelta(t, tt.delta, *st["totalizer"].Delta, 1e-9)
			require.Nil(t, st["flow"].Delta, "only the totalizer has a delta")
		})
	}
}

func requireFloatPtr(t *testing.T, want, got *float64, name string) {
	t.Helper()
	if want == nil {
		require.Nil(t, got, "%s must be null", name)
		return
	}
	require.NotNil(t, got, "%s", name)
	require.InDelta(t, *want, *got, 1e-9, "%s", name)
}

func TestCompleteness(t *testing.T) {
	every := func(step time.Duration, n int, variable string, offset time.Duration) []schemas.Reading {
		var rs []schemas.Reading
		for i := range n {
			rs = append(rs, rd("P", "d", variable, t0.Add(offset+time.Duration(i)*step), float64(i)))
		}
		return rs
	}
	tests := []struct {
		name     string
		interval time.Duration
		readings []schemas.Reading
		expected int32
		received int32
	}{
		{name: "every minute", interval: time.Minute, readings: every(time.Minute, 60, "flow", 0), expected: 60, received: 60},
		{name: "duplicates count once", interval: time.Minute,
			readings: append(every(time.Minute, 60, "flow", 0), every(time.Minute, 60, "flow", 0)...), expected: 60, received: 60},
		{name: "half an hour", interval: time.Minute, readings: every(time.Minute, 30, "flow", 0), expected: 60, received: 30},
		{name: "two variables in one slot", interval: time.Minute,
			readings: append(every(time.Minute, 60, "flow", 0), every(time.Minute, 60, "level", 30*time.Second)...), expected: 60, received: 60},
		{name: "five-minute cadence", interval: 5 * time.Minute, readings: every(time.Minute, 60, "flow", 0), expected: 12, received: 12},
		{name: "interval not dividing the hour", interval: 7 * time.Minute, readings: every(time.Minute, 60, "flow", 0), expected: 9, received: 9},
		{name: "other variables do not count", interval: time.Minute, readings: every(time.Minute, 60, "temperature", 0), expected: 60, received: 0},
		{name: "sparse", interval: time.Minute, readings: every(15*time.Minute, 4, "totalizer", 0), expected: 60, received: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfgWith(func(c *config.Aggregate) { c.ExpectedInterval = config.Duration(tt.interval) }))
			h.mustFeed(0, tt.readings...)
			h.mustFeed(0, rd("P", "d", "temperature", t0.Add(time.Hour+time.Minute), 0))
			e := only(t, h.flush(t0.Add(time.Hour+2*time.Minute)), "P", t0)
			require.Equal(t, tt.expected, e.rec.Expected)
			require.Equal(t, tt.received, e.rec.Received)
		})
	}
}

func TestTotalizerDelta(t *testing.T) {
	type pt struct {
		minute int
		value  float64
		q      int32
	}
	tests := []struct {
		name     string
		provider string
		points   []pt
		slot     *float64 // reading at the slot instant
		want     float64
	}{
		{name: "steady", points: []pt{{0, 100, 0}, {1, 101.5, 0}, {2, 103, 0}}, want: 3},
		{name: "reset flagged restarts from the new value", points: []pt{{0, 100, 0}, {1, 110, 0}, {2, 5, normalize.FlagReset}, {3, 8, 0}}, want: 13},
		{name: "an unflagged drop is a reset", points: []pt{{0, 100, 0}, {1, 110, 0}, {2, 5, 0}, {3, 8, 0}}, want: 13},
		{name: "reset flag on a rise still resets", points: []pt{{0, 100, 0}, {1, 120, normalize.FlagReset}, {2, 125, 0}}, want: 5},
		{name: "rollover with known maximum", provider: "meter", points: []pt{{0, 990, 0}, {1, 995, 0}, {2, 3, normalize.FlagRollover}, {3, 10, 0}}, want: 5 + 8 + 7},
		{name: "rollover with unknown maximum counts nothing across", provider: "other", points: []pt{{0, 990, 0}, {1, 995, 0}, {2, 3, normalize.FlagRollover}, {3, 10, 0}}, want: 5 + 7},
		{name: "slot reading closes the hour", points: []pt{{0, 100, 0}, {59, 150, 0}}, slot: ptr(160), want: 60},
		{name: "single reading", points: []pt{{30, 100, 0}}, want: 0},
		{name: "reset at the slot instant", points: []pt{{0, 100, 0}, {59, 150, 0}}, slot: ptr(2), want: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfgWith(nil))
			var rs []schemas.Reading
			for _, p := range tt.points {
				r := flagged(rd("P", "d", "totalizer", t0.Add(time.Duration(p.minute)*time.Minute), p.value), p.q)
				if tt.provider != "" {
					r.Provider = tt.provider
				}
				rs = append(rs, r)
			}
			// Arrival order must not matter: feed in reverse.
			for i := len(rs) - 1; i >= 0; i-- {
				h.mustFeed(0, rs[i])
			}
			if tt.slot != nil {
				h.mustFeed(0, rd("P", "d", "totalizer", t0.Add(time.Hour), *tt.slot))
			}
			h.mustFeed(0, rd("P", "d", "flow", t0.Add(time.Hour+time.Minute), 0))
			e := only(t, h.flush(t0.Add(time.Hour+2*time.Minute)), "P", t0)
			st := e.hourStats(t)["totalizer"]
			require.NotNil(t, st.Delta)
			require.InDelta(t, tt.want, *st.Delta, 1e-9)
		})
	}
}

func TestClockSkewQuarantine(t *testing.T) {
	skew5m := cfgWith(func(c *config.Aggregate) { c.ClockSkew = config.Duration(5 * time.Minute) })
	now := t0.Add(30 * time.Minute)
	tests := []struct {
		name       string
		time, recv time.Time
		wantReason string
	}{
		{name: "on time", time: now.Add(-time.Minute), recv: now},
		{name: "fast clock within skew", time: now.Add(4 * time.Minute), recv: now},
		{name: "beyond skew", time: now.Add(6 * time.Minute), recv: now, wantReason: "clock_skew"},
		{name: "beyond skew of a backlog's reception", time: now.Add(-time.Hour + 6*time.Minute), recv: now.Add(-time.Hour), wantReason: "clock_skew"},
		{name: "received in the future", time: now.Add(time.Hour), recv: now.Add(time.Hour), wantReason: "clock_skew"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, skew5m)
			h.now, h.pinned = now, true
			err := h.feed(0, recv(rd("P", "d", "flow", tt.time, 1), tt.recv))
			if tt.wantReason == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.False(t, pipeline.IsTransient(err))
			require.Equal(t, tt.wantReason, pipeline.Reason(err))
			require.Equal(t, 1.0, h.metric("stackvps_aggregate_readings_total", "outcome", "clock_skew"))
		})
	}

	t.Run("moves no watermark", func(t *testing.T) {
		h := newHarness(t, skew5m)
		h.mustFeed(0, minutes("P", "d", "flow", t0, 60, func(int) float64 { return 1 })...)
		// Stamped 14:30 but received 14:00:00: quarantined.
		err := h.feed(0, recv(rd("P", "d", "flow", t0.Add(90*time.Minute), 1), t0.Add(time.Hour)))
		require.Equal(t, "clock_skew", pipeline.Reason(err))
		for _, e := range h.flush(t0.Add(time.Hour + 5*time.Second)) {
			// The 13:00 reading is the slot instant of 12:00-13:00, which
			// closes; the hour of 13:00 must not.
			require.Equal(t, t0.Add(-time.Hour), e.rec.PeriodStart.UTC(), "the quarantined reading closed no window")
		}
		require.Equal(t, 2.0, h.metric("stackvps_aggregate_windows_open"))
	})
}

func TestBadRecordsAreDeadLettered(t *testing.T) {
	h := newHarness(t, cfgWith(nil))
	_, err := h.agg.Process(context.Background(), pipeline.Record{Topic: topic, Value: []byte("not avro")})
	require.Equal(t, "bad_record", pipeline.Reason(err))
	require.False(t, pipeline.IsTransient(err))
	err = h.feed(0, rd("P", "d", "flow", t0, math.NaN()))
	require.Equal(t, "bad_value", pipeline.Reason(err))
	require.Equal(t, 0.0, h.metric("stackvps_aggregate_windows_open"))
}

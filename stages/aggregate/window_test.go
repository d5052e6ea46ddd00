package aggregate_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
)

// emissionsOf returns the timed emissions of point for the hour at start.
func emissionsOf(es []timedEmission, point string, start time.Time) []timedEmission {
	var out []timedEmission
	for _, e := range es {
		if e.rec.Point == point && e.rec.PeriodStart.Equal(start) {
			out = append(out, e)
		}
	}
	return out
}

// TestPerDeviceWatermarks runs one partition holding a point with a
// fast-clock device beside a normal one, a point whose only device uploads a
// backlog, and a point reporting normally: nobody's clock or backlog makes
// another's readings late or holds another point back.
func TestPerDeviceWatermarks(t *testing.T) {
	var rs []schemas.Reading
	for i := range 66 { // 13:00 .. 14:05 true time
		at := t0.Add(time.Duration(i) * time.Minute)
		rs = append(rs, rd("A", "n", "flow", at, float64(i)))
		// Device f's clock runs 3 minutes fast (within aggregate.clock_skew).
		rs = append(rs, recv(rd("A", "f", "level", at.Add(3*time.Minute), float64(i)), at.Add(10*time.Second)))
	}
	for i := range 90 { // 13:00 .. 14:29, uploaded at once at 14:30
		rs = append(rs, recv(rd("B", "b", "flow", t0.Add(time.Duration(i)*time.Minute), float64(i)), t0.Add(90*time.Minute)))
	}
	rs = append(rs, minutes("C", "c", "flow", t0, 101, func(i int) float64 { return float64(i) })...)

	h := newHarness(t, cfgWith(nil))
	es := h.live(0, rs, t0.Add(101*time.Minute))

	tests := []struct {
		name    string
		point   string
		at      time.Time // processing time of the (only) emission
		version int32
	}{
		// n passes 14:01 at 14:01:10; f passed it at 13:58 but closes
		// nothing alone. 60 flows, f's levels stamped 13:03..13:59, and the
		// slot readings of both devices at 14:00.
		{name: "fast clock device closes nothing early", point: "A", at: t0.Add(62 * time.Minute), version: 60 + 57 + 2},
		// C is not held back by B's backlog in the same partition.
		{name: "normal point is not held by a backlog", point: "C", at: t0.Add(62 * time.Minute), version: 60 + 1},
		// B's backlog arrives at 14:30 and is on time for B: its hour is
		// emitted once, whole, not as corrections.
		{name: "backlog device is on time for itself", point: "B", at: t0.Add(90 * time.Minute), version: 60 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := emissionsOf(es, tt.point, t0)
			require.Len(t, got, 1, "one emission, no correction")
			require.Equal(t, tt.at, got[0].at)
			require.Equal(t, tt.version, got[0].rec.Version)
			require.Equal(t, int32(60), got[0].rec.Received)
		})
	}
	require.Zero(t, h.metric("stackvps_aggregate_late_readings_total"))
	require.Zero(t, h.metric("stackvps_aggregate_corrections_total"))
}

func TestIdleTimeout(t *testing.T) {
	cfg := cfgWith(nil) // idle_timeout 10m
	tests := []struct {
		name string
		// readings in arrival order, fed live until the last flush
		readings []schemas.Reading
		until    time.Time
		point    string
		// the hour of t0 is emitted by the flush at this processing time
		want time.Time
	}{
		{
			// The device stops at 13:30; nothing else arrives: once the
			// partition is quiet, processing time closes the hour idle_timeout
			// after 14:01.
			name:     "quiet partition, processing time closes",
			readings: minutes("A", "a", "flow", t0, 31, func(int) float64 { return 1 }),
			until:    t0.Add(75 * time.Minute), point: "A", want: t0.Add(72 * time.Minute),
		},
		{
			// Another point keeps the partition busy: its arrivals are the
			// clock A's silence is measured on.
			name: "busy partition, arrival clock closes",
			readings: append(minutes("A", "a", "flow", t0, 31, func(int) float64 { return 1 }),
				minutes("B", "b", "flow", t0, 85, func(int) float64 { return 1 })...),
			until: t0.Add(85 * time.Minute), point: "A", want: t0.Add(72 * time.Minute),
		},
		{
			// e2 went silent at 13:10: it holds nothing back while e1 reports.
			name: "idle device holds nobody back",
			readings: append(minutes("E", "e1", "flow", t0, 70, func(int) float64 { return 1 }),
				minutes("E", "e2", "level", t0, 11, func(int) float64 { return 1 })...),
			until: t0.Add(70 * time.Minute), point: "E", want: t0.Add(62 * time.Minute),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg)
			es := emissionsOf(h.live(0, tt.readings, tt.until), tt.point, t0)
			require.Len(t, es, 1)
			require.Equal(t, tt.want, es[0].at)
		})
	}

	t.Run("a stage catching up is not fooled by its lag", func(t *testing.T) {
		h := newHarness(t, cfg)
		// An hour and a half of readings consumed at once, hours after they
		// arrived.
		h.now, h.pinned = t0.Add(5*time.Hour), true
		h.mustFeed(0, minutes("A", "a", "flow", t0, 90, func(int) float64 { return 1 })...)
		es := h.flush(h.now)
		require.Len(t, es, 2, "12:00 (slot only) and 13:00 close by watermark")
		for _, e := range es {
			require.NotEqual(t, t0.Add(time.Hour), e.rec.PeriodStart.UTC(), "14:00 is still being filled: the device is not idle on the arrival clock")
		}
		// Once the partition has been quiet, the processing time shows the
		// device is silent.
		es = h.flush(h.now.Add(quiet))
		require.Len(t, es, 1)
		require.Equal(t, t0.Add(time.Hour), es[0].rec.PeriodStart.UTC())
		require.Equal(t, 1.0, h.metric("stackvps_aggregate_window_closes_total", "cause", "idle"))
	})
}

// quiet is how long a partition must return nothing to count as caught up.
const quiet = 10 * time.Second

func TestLateReadings(t *testing.T) {
	end := t0.Add(time.Hour)
	base := func() []schemas.Reading {
		rs := minutes("P", "d", "flow", t0, 30, func(i int) float64 { return 10 })
		rs = append(rs, minutes("P", "d", "flow", t0.Add(31*time.Minute), 29, func(i int) float64 { return 10 })...)
		// 13:30 (20) is missing from the first emission; 14:00 has no slot
		// reading, 14:00:30 is the slot instant's value.
		return append(rs, rd("P", "d", "flow", end.Add(30*time.Second), 5), rd("P", "d", "flow", end.Add(time.Minute), 7))
	}
	tests := []struct {
		name       string
		late       schemas.Reading
		wantReason string // "" accepted
		correction bool
		check      func(t *testing.T, r schemas.ComplianceRecord)
	}{
		{
			name: "within lateness: a correction", late: recv(rd("P", "d", "flow", t0.Add(30*time.Minute), 20), end.Add(40*time.Minute)),
			correction: true,
			check: func(t *testing.T, r schemas.ComplianceRecord) {
				require.Equal(t, int32(60+1), r.Version)
				require.Equal(t, int32(60), r.Received)
				require.Equal(t, end.Add(40*time.Minute), r.EmittedAt.UTC(), "emitted_at is the newest reception it reflects")
			},
		},
		{
			name: "in the slot bucket: the instant value changes", late: recv(rd("P", "d", "flow", end, 6), end.Add(50*time.Minute)),
			correction: true,
			check: func(t *testing.T, r schemas.ComplianceRecord) {
				require.Equal(t, 6.0, *r.Flow)
				require.Equal(t, int32(59), r.Received)
			},
		},
		{name: "a duplicate changes nothing", late: recv(rd("P", "d", "flow", t0.Add(10*time.Minute), 99), end.Add(40*time.Minute))},
		{
			// The deadline of 13:00 is 14:01 + 2h on the arrival clock.
			name: "beyond lateness: dead-lettered", late: recv(rd("P", "d", "flow", t0.Add(30*time.Minute), 20), end.Add(2*time.Hour+2*time.Minute)),
			wantReason: "too_late",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfgWith(nil))
			h.mustFeed(0, base()...)
			first := only(t, h.flush(end.Add(2*time.Minute)), "P", t0)
			require.Equal(t, int32(59+1), first.rec.Version)
			require.Equal(t, 5.0, *first.rec.Flow)
			err := h.feed(0, tt.late)
			if tt.wantReason != "" {
				require.Equal(t, tt.wantReason, pipeline.Reason(err))
				require.Equal(t, 1.0, h.metric("stackvps_aggregate_late_readings_total", "outcome", "too_late"))
			} else {
				require.NoError(t, err)
			}
			es := h.flush(tt.late.ReceivedAt.Add(time.Second))
			var mine []emission
			for _, e := range es {
				if e.rec.PeriodStart.Equal(t0) {
					mine = append(mine, e)
				}
			}
			if !tt.correction {
				require.Empty(t, mine)
				require.Zero(t, h.metric("stackvps_aggregate_corrections_total"))
				return
			}
			require.Len(t, mine, 1)
			require.Greater(t, mine[0].rec.Version, first.rec.Version)
			require.Equal(t, 1.0, h.metric("stackvps_aggregate_corrections_total"))
			require.Equal(t, 1.0, h.metric("stackvps_aggregate_late_readings_total", "outcome", "corrected"))
			tt.check(t, mine[0].rec)
		})
	}

	t.Run("late readings between two flushes make one correction", func(t *testing.T) {
		h := newHarness(t, cfgWith(nil))
		h.mustFeed(0, base()...)
		only(t, h.flush(end.Add(2*time.Minute)), "P", t0)
		h.mustFeed(0, recv(rd("P", "d", "flow", t0.Add(30*time.Minute), 20), end.Add(40*time.Minute)),
			recv(rd("P", "d", "level", t0.Add(30*time.Minute), 2), end.Add(41*time.Minute)))
		e := only(t, h.flush(end.Add(42*time.Minute)), "P", t0)
		require.Equal(t, int32(62), e.rec.Version)
		require.Equal(t, 2.0, h.metric("stackvps_aggregate_late_readings_total", "outcome", "corrected"))
		require.Equal(t, 1.0, h.metric("stackvps_aggregate_corrections_total"))
	})

	t.Run("a window is released at its deadline", func(t *testing.T) {
		h := newHarness(t, cfgWith(func(c *config.Aggregate) { c.AllowedLateness = config.Duration(30 * time.Minute) }))
		h.mustFeed(0, base()...)
		only(t, h.flush(end.Add(2*time.Minute)), "P", t0)
		require.Equal(t, 2.0, h.metric("stackvps_aggregate_windows_open"))
		// Another point moves the arrival clock past 14:31.
		h.mustFeed(0, rd("Q", "q", "flow", end.Add(31*time.Minute), 1))
		h.flush(end.Add(32 * time.Minute))
		require.Equal(t, 2.0, h.metric("stackvps_aggregate_windows_open"), "13:00 of P released; 14:00 of P and of Q open")
		err := h.feed(0, rd("P", "d", "flow", t0.Add(45*time.Minute), 1))
		require.Equal(t, "too_late", pipeline.Reason(err))
	})
}

func TestHeldOffsets(t *testing.T) {
	h := newHarness(t, cfgWith(func(c *config.Aggregate) { c.AllowedLateness = config.Duration(30 * time.Minute) }))
	require.Empty(t, h.agg.HeldOffsets(), "nothing consumed, nothing held")
	// Offsets 0..59: hour 13 (0 is also the slot of 12:00).
	h.mustFeed(0, minutes("P", "d", "flow", t0, 60, func(int) float64 { return 1 })...)
	require.Equal(t, map[string]map[int32]int64{topic: {0: 0}}, h.agg.HeldOffsets())
	// Offsets 60..: hour 14. Offset 61 is received before offset 60, so it
	// is no record high: replaying from it would rebuild a wrong arrival
	// clock.
	h.mustFeed(0, rd("P", "d", "flow", t0.Add(60*time.Minute), 1))
	h.mustFeed(0, recv(rd("Q", "q", "flow", t0.Add(60*time.Minute), 1), t0.Add(59*time.Minute)))
	h.mustFeed(0, minutes("P", "d", "flow", t0.Add(61*time.Minute), 20, func(int) float64 { return 1 })...)
	h.flush(h.now)
	require.Equal(t, int64(0), h.agg.HeldOffsets()[topic][0], "13:00 is open until 14:31 on the arrival clock")
	// Arrival clock 14:40:10: 12:00 and 13:00 are released. The first open
	// window, P's 14:00, starts at offset 60 (Q's at 61).
	h.mustFeed(0, minutes("P", "d", "flow", t0.Add(81*time.Minute), 20, func(int) float64 { return 1 })...)
	h.flush(h.now)
	require.Equal(t, int64(60), h.agg.HeldOffsets()[topic][0])

	t.Run("the held offset is a record high", func(t *testing.T) {
		h := newHarness(t, cfgWith(func(c *config.Aggregate) { c.AllowedLateness = config.Duration(30 * time.Minute) }))
		h.mustFeed(0, minutes("P", "d", "flow", t0, 60, func(int) float64 { return 1 })...)
		// Q's 14:00 window starts at offset 60, received before P's latest.
		h.mustFeed(0, recv(rd("Q", "q", "flow", t0.Add(60*time.Minute), 1), t0.Add(59*time.Minute)))
		h.mustFeed(0, minutes("P", "d", "flow", t0.Add(60*time.Minute), 40, func(int) float64 { return 1 })...)
		h.flush(h.now)
		require.Equal(t, int64(59), h.agg.HeldOffsets()[topic][0], "the record high before Q's first record")
	})

	t.Run("dropped partitions hold nothing", func(t *testing.T) {
		h := newHarness(t, cfgWith(nil))
		h.mustFeed(0, rd("P", "d", "flow", t0, 1))
		h.mustFeed(1, rd("Q", "d", "flow", t0, 1))
		require.Len(t, h.agg.HeldOffsets()[topic], 2)
		h.agg.DropPartitions(map[string][]int32{topic: {1}})
		require.Equal(t, map[string]map[int32]int64{topic: {0: 0}}, h.agg.HeldOffsets())
		h.flush(h.now)
		require.Equal(t, 2.0, h.metric("stackvps_aggregate_windows_open"), "P's 12:00 slot and 13:00")
	})
}

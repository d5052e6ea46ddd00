package aggregate_test

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/aggregate"
)

// t0 is the start of the hour most tests aggregate.
var t0 = time.Date(2026, 3, 2, 13, 0, 0, 0, time.UTC)

const topic = "telemetry.readings"

// emission is one record Flush returned, decoded.
type emission struct {
	key   string
	value []byte
	stats []byte
	rec   schemas.ComplianceRecord
}

// harness drives an Aggregator by hand, with a clock the test sets.
type harness struct {
	tb   testing.TB
	agg  *aggregate.Aggregator
	reg  *prometheus.Registry
	rc   *schemas.Codec[schemas.Reading]
	cc   *schemas.Codec[schemas.ComplianceRecord]
	now  time.Time
	next map[int32]int64
	out  []emission
	// pinned keeps now where the test set it; otherwise feeding a reading
	// moves the clock to its reception, as for a live stage.
	pinned bool
}

func codecs(tb testing.TB) (*schemas.Codec[schemas.Reading], *schemas.Codec[schemas.ComplianceRecord]) {
	tb.Helper()
	rc, err := schemas.NewReadingCodec(context.Background(), config.SchemaRegistry{}, topic)
	require.NoError(tb, err)
	cc, err := schemas.NewComplianceRecordCodec(context.Background(), config.SchemaRegistry{}, "compliance.records")
	require.NoError(tb, err)
	return rc, cc
}

func newHarness(tb testing.TB, cfg config.Aggregate) *harness {
	tb.Helper()
	rc, cc := codecs(tb)
	h := &harness{tb: tb, reg: prometheus.NewRegistry(), rc: rc, cc: cc, next: map[int32]int64{}}
	agg, err := aggregate.New(cfg, aggregate.Deps{
		Decoder: rc, Encoder: cc, Registerer: h.reg,
		Log:               slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:               func() time.Time { return h.now },
		TotalizerRollover: map[string]float64{"meter": 1000},
	})
	require.NoError(tb, err)
	h.agg = agg
	return h
}

// feed processes one reading on partition p at the next offset, with the
// clock at its reception.
func (h *harness) feed(p int32, r schemas.Reading) error {
	h.tb.Helper()
	b, err := h.rc.Encode(&r)
	require.NoError(h.tb, err)
	if !h.pinned && r.ReceivedAt.After(h.now) {
		h.now = r.ReceivedAt
	}
	off := h.next[p]
	h.next[p]++
	outs, err := h.agg.Process(context.Background(), pipeline.Record{Topic: topic, Partition: p, Offset: off, Value: b, Time: r.Time})
	require.Empty(h.tb, outs, "Process never emits")
	return err
}

func (h *harness) mustFeed(p int32, rs ...schemas.Reading) {
	h.tb.Helper()
	for _, r := range rs {
		require.NoError(h.tb, h.feed(p, r))
	}
}

// flush flushes at processing time now and returns what was emitted.
func (h *harness) flush(now time.Time) []emission {
	h.tb.Helper()
	if now.After(h.now) {
		h.now = now
	}
	recs, err := h.agg.Flush(context.Background(), now)
	require.NoError(h.tb, err)
	out := make([]emission, 0, len(recs))
	for _, r := range recs {
		out = append(out, decodeEmission(h.tb, h.cc, r.Key, r.Value, r.Headers))
	}
	h.out = append(h.out, out...)
	return out
}

func decodeEmission(tb testing.TB, cc *schemas.Codec[schemas.ComplianceRecord], key, value []byte, hdrs []pipeline.Header) emission {
	tb.Helper()
	e := emission{key: string(key), value: value}
	require.NoError(tb, cc.Decode(value, &e.rec))
	for _, hd := range hdrs {
		if hd.Key == aggregate.HeaderHourStats {
			e.stats = hd.Value
		}
	}
	require.NotNil(tb, e.stats, "every record carries %s", aggregate.HeaderHourStats)
	return e
}

func (e emission) hourStats(tb testing.TB) aggregate.HourStats {
	tb.Helper()
	s, err := aggregate.ParseHourStats(e.stats)
	require.NoError(tb, err)
	return s
}

// latest returns, per point and period start, the emission of highest
// version: what a consumer of compliance.records keeps.
func latest(es []emission) map[string]emission {
	out := map[string]emission{}
	for _, e := range es {
		k := e.rec.Point + "@" + e.rec.PeriodStart.UTC().Format(time.RFC3339)
		if cur, ok := out[k]; !ok || e.rec.Version > cur.rec.Version {
			out[k] = e
		}
	}
	return out
}

// only returns the single emission of point for the hour starting at start.
func only(tb testing.TB, es []emission, point string, start time.Time) emission {
	tb.Helper()
	var found []emission
	for _, e := range es {
		if e.rec.Point == point && e.rec.PeriodStart.Equal(start) {
			found = append(found, e)
		}
	}
	require.Len(tb, found, 1, "emissions of %s at %s", point, start)
	return found[0]
}

func (h *harness) metric(name string, labels ...string) float64 {
	h.tb.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(h.tb, err)
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue metric
				}
			}
			switch {
			case m.GetCounter() != nil:
				total += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				total += m.GetGauge().GetValue()
			}
		}
	}
	return total
}

// rd is a reading received 10s after it was measured.
func rd(point, dev, variable string, t time.Time, v float64) schemas.Reading {
	return schemas.Reading{Point: point, Device: dev, Variable: variable, Time: t, Value: v, Unit: "u",
		Provider: "meter", ReceivedAt: t.Add(10 * time.Second), Source: "test"}
}

// recv returns r received at at.
func recv(r schemas.Reading, at time.Time) schemas.Reading {
	r.ReceivedAt = at
	return r
}

// flagged returns r with quality q.
func flagged(r schemas.Reading, q int32) schemas.Reading {
	r.Quality = q
	return r
}

// minutes returns readings of variable every minute from start for n
// minutes, valued by f(i).
func minutes(point, dev, variable string, start time.Time, n int, f func(i int) float64) []schemas.Reading {
	out := make([]schemas.Reading, 0, n)
	for i := range n {
		out = append(out, rd(point, dev, variable, start.Add(time.Duration(i)*time.Minute), f(i)))
	}
	return out
}

// byArrival sorts readings by reception time, stably.
func byArrival(rs []schemas.Reading) []schemas.Reading {
	out := append([]schemas.Reading(nil), rs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].ReceivedAt.Before(out[j].ReceivedAt) })
	return out
}

// live feeds readings in arrival order on partition p, flushing at every
// minute boundary of the arrival clock as a live stage would, and returns
// the emissions with the processing time of the flush that emitted each.
func (h *harness) live(p int32, rs []schemas.Reading, until time.Time) []timedEmission {
	h.tb.Helper()
	var out []timedEmission
	rs = byArrival(rs)
	i := 0
	start := t0.Add(-time.Hour)
	if len(rs) > 0 && rs[0].ReceivedAt.Before(start) {
		start = rs[0].ReceivedAt.Truncate(time.Minute)
	}
	for tick := start; !tick.After(until); tick = tick.Add(time.Minute) {
		for i < len(rs) && !rs[i].ReceivedAt.After(tick) {
			require.NoError(h.tb, h.feed(p, rs[i]))
			i++
		}
		for _, e := range h.flush(tick) {
			out = append(out, timedEmission{at: tick, emission: e})
		}
	}
	require.Equal(h.tb, len(rs), i, "every reading arrived before %s", until)
	return out
}

type timedEmission struct {
	at time.Time
	emission
}

func ptr(v float64) *float64 { return &v }

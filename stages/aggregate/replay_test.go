package aggregate_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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

// stream generates five hours of a small fleet on two partitions, with what
// the field sends: jittered reception, a fast clock, late and very late
// readings, backlog uploads after outages, duplicates, readings stamped in
// the future, and reception times slightly out of order.
func stream(rng *rand.Rand) map[int32][]schemas.Reading {
	type dev struct {
		point, id string
		clock     time.Duration
		vars      []string
	}
	devs := []dev{
		{"P0", "a", 0, []string{"flow", "totalizer", "level"}},
		{"P1", "b", 2 * time.Minute, []string{"flow", "totalizer"}},
		{"P1", "c", 0, []string{"level"}},
		{"P2", "d", 0, []string{"flow", "totalizer", "level"}},
		{"P3", "e", 0, []string{"flow", "totalizer"}},
		{"P3", "f", -time.Minute, []string{"level"}},
	}
	partOf := map[string]int32{"P0": 0, "P1": 1, "P2": 0, "P3": 1}
	out := map[int32][]schemas.Reading{}
	for _, d := range devs {
		total := 1000.0
		var outageUntil time.Time
		for i := range 300 {
			at := t0.Add(time.Duration(i) * time.Minute)
			if at.Before(outageUntil) || rng.IntN(400) == 0 {
				if !at.Before(outageUntil) {
					outageUntil = at.Add(time.Duration(20+rng.IntN(70)) * time.Minute)
				}
			}
			total += rng.Float64() * 3
			if rng.IntN(500) == 0 {
				total = rng.Float64() * 10 // a reset
			}
			for _, v := range d.vars {
				val := rng.Float64() * 50
				if v == "totalizer" {
					val = total
				}
				r := rd(d.point, d.id, v, at.Add(d.clock), val)
				r.ReceivedAt = at.Add(time.Duration(1+rng.IntN(40)) * time.Second)
				switch n := rng.IntN(1000); {
				case at.Before(outageUntil):
					r.ReceivedAt = outageUntil.Add(time.Duration(rng.IntN(30)) * time.Second)
				case n < 15:
					r.ReceivedAt = at.Add(time.Duration(5+rng.IntN(180)) * time.Minute) // late, some too late
				case n < 20:
					r.Time = r.ReceivedAt.Add(10 * time.Minute) // clock jump: quarantined
				}
				out[partOf[d.point]] = append(out[partOf[d.point]], r)
				if rng.IntN(50) == 0 {
					dup := r
					dup.Value++
					dup.ReceivedAt = r.ReceivedAt.Add(time.Duration(rng.IntN(600)) * time.Second)
					out[partOf[d.point]] = append(out[partOf[d.point]], dup)
				}
			}
		}
	}
	for p, rs := range out {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].ReceivedAt.Before(rs[j].ReceivedAt) })
		// Several normalize instances interleave: reception is not quite
		// monotonic within a partition.
		for i := 1; i < len(rs); i++ {
			if rng.IntN(20) == 0 {
				rs[i-1], rs[i] = rs[i], rs[i-1]
			}
		}
		out[p] = rs
	}
	return out
}

// run is one life of the stage: an Aggregator fed from positions.
type run struct {
	tb  testing.TB
	agg *aggregate.Aggregator
	cc  *schemas.Codec[schemas.ComplianceRecord]
}

func newRun(tb testing.TB, rc *schemas.Codec[schemas.Reading], cc *schemas.Codec[schemas.ComplianceRecord], clock *time.Time) run {
	agg, err := aggregate.New(cfgWith(nil), aggregate.Deps{
		Decoder: rc, Encoder: cc, Registerer: prometheus.NewRegistry(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return *clock },
	})
	require.NoError(tb, err)
	return run{tb: tb, agg: agg, cc: cc}
}

// TestReplayAfterCrashIsIdempotent kills the stage at random points (before
// its flush, after producing but before committing, after committing),
// restarts it from the committed (held) offsets with a later clock, and
// checks that a consumer keeping the highest version per (point, period)
// ends with exactly the records of a run that never crashed, and that every
// record carrying a highest version is byte-for-byte the same.
func TestReplayAfterCrashIsIdempotent(t *testing.T) {
	seeds := uint64(8)
	if testing.Short() {
		seeds = 2
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			recs := stream(rng)
			rc, cc := codecs(t)
			encoded := map[int32][][]byte{}
			for p, rs := range recs {
				for _, r := range rs {
					b, err := rc.Encode(&r)
					require.NoError(t, err)
					encoded[p] = append(encoded[p], b)
				}
			}

			reference := simulate(t, rc, cc, encoded, recs, rand.New(rand.NewPCG(seed, 7)), 0)
			crashy := simulate(t, rc, cc, encoded, recs, rand.New(rand.NewPCG(seed, 8)), 0.12)
			require.Greater(t, crashy.crashes, 3, "the test must crash")

			want, got := latest(reference.emitted), latest(crashy.emitted)
			require.NotEmpty(t, want)
			require.Equal(t, len(want), len(got), "the same (point, period)s are emitted")
			for k, w := range want {
				g, ok := got[k]
				require.True(t, ok, "%s emitted", k)
				require.Equal(t, w.rec.Version, g.rec.Version, "%s: highest version", k)
				require.True(t, bytes.Equal(w.value, g.value), "%s: value of the highest version\nwant %+v\ngot  %+v", k, w.rec, g.rec)
				require.True(t, bytes.Equal(w.stats, g.stats), "%s: statistics of the highest version", k)
			}
			// Equal versions are equal records where consumers look: at the top.
			for _, e := range crashy.emitted {
				top := got[e.rec.Point+"@"+e.rec.PeriodStart.UTC().Format(time.RFC3339)]
				if e.rec.Version == top.rec.Version {
					require.True(t, bytes.Equal(e.value, top.value), "a re-emission of the highest version is a duplicate")
				}
			}
			require.Greater(t, crashy.reemitted, 0, "crashes re-emitted some windows")
		})
	}
}

type simResult struct {
	emitted   []emission
	crashes   int
	reemitted int
}

// simulate consumes the partitions in polls of random size, flushing after
// each poll and committing the held offsets, as pipeline.Stage does. With
// probability crashP per poll the process dies at a random point of the
// poll and restarts from the committed offsets.
func simulate(t *testing.T, rc *schemas.Codec[schemas.Reading], cc *schemas.Codec[schemas.ComplianceRecord],
	encoded map[int32][][]byte, recs map[int32][]schemas.Reading, rng *rand.Rand, crashP float64) simResult {
	t.Helper()
	var (
		clock     = t0
		res       simResult
		committed = map[int32]int64{}
		pos       = map[int32]int64{}
		seen      = map[string]bool{}
	)
	r := newRun(t, rc, cc, &clock)
	produce := func(out []pipeline.Record) {
		for _, o := range out {
			e := decodeEmission(t, cc, o.Key, o.Value, o.Headers)
			id := string(o.Value)
			if seen[id] {
				res.reemitted++
			}
			seen[id] = true
			res.emitted = append(res.emitted, e)
		}
	}
	done := func() bool {
		for p, b := range encoded {
			if pos[p] < int64(len(b)) {
				return false
			}
		}
		return true
	}
	for !done() {
		for p, b := range encoded {
			n := int64(1 + rng.IntN(60))
			for ; n > 0 && pos[p] < int64(len(b)); n-- {
				if arr := recs[p][pos[p]].ReceivedAt; arr.After(clock) {
					clock = arr
				}
				_, _ = r.agg.Process(context.Background(), pipeline.Record{Topic: topic, Partition: p, Offset: pos[p], Value: b[pos[p]]})
				pos[p]++
			}
		}
		clock = clock.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		crash := rng.Float64() < crashP
		stage := rng.IntN(3)
		if crash && stage == 0 { // killed before the flush
			res.crashes++
			r, pos = restart(t, rc, cc, &clock, committed)
			continue
		}
		out, err := r.agg.Flush(context.Background(), clock)
		require.NoError(t, err)
		produce(out)
		if crash && stage == 1 { // killed after producing, before committing
			res.crashes++
			r, pos = restart(t, rc, cc, &clock, committed)
			continue
		}
		held := r.agg.HeldOffsets()[topic]
		for p := range encoded {
			c := pos[p]
			if h, ok := held[p]; ok && h < c {
				c = h
			}
			committed[p] = c
		}
		if crash { // killed right after committing
			res.crashes++
			r, pos = restart(t, rc, cc, &clock, committed)
		}
	}
	// The fleet falls silent: the rest closes on idleness.
	for _, d := range []time.Duration{time.Minute, time.Hour, 3 * time.Hour} {
		out, err := r.agg.Flush(context.Background(), clock.Add(d))
		require.NoError(t, err)
		produce(out)
	}
	return res
}

func restart(t *testing.T, rc *schemas.Codec[schemas.Reading], cc *schemas.Codec[schemas.ComplianceRecord],
	clock *time.Time, committed map[int32]int64) (run, map[int32]int64) {
	*clock = clock.Add(30 * time.Second)
	pos := map[int32]int64{}
	for p, c := range committed {
		pos[p] = c
	}
	return newRun(t, rc, cc, clock), pos
}

// TestReplayRebuildsArrivalClock replays from the held offset and checks
// that every record gets the same decision as the first time: the held
// offset is a record high, so the arrival clock is rebuilt exactly and a
// reading refused as too late is not accepted by the replay.
func TestReplayRebuildsArrivalClock(t *testing.T) {
	cfg := cfgWith(func(c *config.Aggregate) { c.AllowedLateness = config.Duration(30 * time.Minute) })
	records := []schemas.Reading{
		// Too late for 12:00 (deadline 13:31), but it moves the clock to 14:40.
		recv(rd("R", "r", "flow", t0.Add(-30*time.Minute), 1), t0.Add(100*time.Minute)),
		// Opens Q's 14:00; received before the clock: no record high.
		recv(rd("Q", "q", "flow", t0.Add(65*time.Minute), 1), t0.Add(65*time.Minute)),
		// Too late for 13:00 (deadline 14:31) on a clock at 14:40.
		recv(rd("P", "p", "flow", t0.Add(50*time.Minute), 1), t0.Add(80*time.Minute)),
	}
	reasons := func(h *harness, from int) []string {
		var out []string
		for i := from; i < len(records); i++ {
			h.next[0] = int64(i)
			out = append(out, pipeline.Reason(h.feed(0, records[i])))
		}
		return out
	}
	first := newHarness(t, cfg)
	want := reasons(first, 0)
	require.Equal(t, []string{"too_late", "unclassified", "too_late"}, want)
	held := first.agg.HeldOffsets()[topic][0]
	require.Equal(t, int64(0), held, "Q's window starts at 1, but 1 is no record high")

	replay := newHarness(t, cfg)
	require.Equal(t, want[held:], reasons(replay, int(held)))
	for _, e := range replay.flush(t0.Add(10 * time.Hour)) {
		require.NotEqual(t, "P", e.rec.Point, "the replay accepted nothing the first run refused")
	}

	// Why: replaying from Q's first record would start the clock at 14:05
	// and accept P's reading.
	wrong := newHarness(t, cfg)
	require.Equal(t, []string{"unclassified", "unclassified"}, reasons(wrong, 1))
}

package timescale_test

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// hierarchyWindows returns, per day zone, the local times around which the
// hierarchy test puts readings: local midnights where the day boundary is a
// whole UTC hour (Santiago, its DST days included), a :30 and a :45 one
// (Kolkata, Kathmandu), and a Kathmandu midnight under local mean time
// (+05:41:16 before 1920), where not even minutes are aligned.
func hierarchyWindows(t *testing.T, zone string) []time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	require.NoError(t, err)
	at := func(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, loc) }
	switch zone {
	case "America/Santiago":
		return []time.Time{
			at(2026, 5, 17, 21), // ordinary midnight
			at(2026, 4, 4, 21),  // DST ends: Saturday has 25 hours
			at(2026, 9, 5, 21),  // DST starts: Sunday has 23, its midnight does not exist
		}
	case "Asia/Kathmandu":
		return []time.Time{at(2026, 5, 17, 21), at(1919, 6, 10, 21)}
	}
	return []time.Time{at(2026, 5, 17, 21), at(2026, 5, 19, 21)}
}

// TestRollupsHierarchyMatchesRawIntegration checks that rollups computed
// from each other (on plain PostgreSQL: 1h from 1m, 1d from 1h or 1m, per
// migration 0010) equal a recomputation from raw readings, in day zones
// aligned on hours, on half and quarter hours, and on nothing, with late
// readings, a day-zone change while refreshes are pending, deletions
// (buckets that lose some or all of their readings) and rewritten values.
// min, max, count and last are exact; avg within 1e-9 (requireSameAgg).
func TestRollupsHierarchyMatchesRawIntegration(t *testing.T) {
	for _, zone := range []string{"America/Santiago", "Asia/Kolkata", "Asia/Kathmandu"} {
		t.Run(zone, func(t *testing.T) {
			e := newRollupEnv(t, nil) // days in America/Santiago at first
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(7, uint64(len(zone))))
			var rows []timescale.Row
			for _, start := range hierarchyWindows(t, zone) {
				for _, point := range []string{"P1", "P2", "P3"} {
					for _, variable := range []string{"flow", "level"} {
						// About 6 hours around local midnight, at irregular
						// times down to the microsecond, values of mixed sign
						// and magnitude.
						for range 90 {
							tm := start.Add(time.Duration(rng.Int64N(int64(6 * time.Hour))).Truncate(time.Microsecond))
							rows = append(rows, timescale.Row{Time: tm, Point: point, Variable: variable,
								Value: math.Round((rng.Float64()-0.3)*math.Pow(10, float64(rng.IntN(6)))*1000) / 1000})
						}
					}
				}
			}
			rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
			// The earliest window goes first and whole: SetDayTimezone
			// refuses a change while the earliest day of readings_1d
			// disagrees with raw readings (it takes that for retention).
			earliest := slices.MinFunc(hierarchyWindows(t, zone), func(a, b time.Time) int { return a.Compare(b) })
			var first, rest []timescale.Row
			for _, r := range rows {
				if r.Time.Before(earliest.Add(6*time.Hour)) || len(first) < len(rows)/2 {
					first = append(first, r)
				} else {
					rest = append(rest, r)
				}
			}
			pending, late := rest[:len(rest)/2], rest[len(rest)/2:]

			for i, b := range batches(first, 80) {
				e.write(t, b)
				if i%2 == 1 {
					e.pass(t)
				}
			}
			e.pass(t)
			e.requireRollupsMatch(t, "America/Santiago")

			// The zone changes while batches wait for their refresh: the
			// rebuilt days read 1h/1m as they are, and the next pass makes
			// them whole.
			for _, b := range batches(pending, 80) {
				e.write(t, b)
			}
			_, err := timescale.SetDayTimezone(testenv.Context(t, time.Minute), e.pool, zone, quiet)
			require.NoError(t, err)
			e.pass(t)
			e.requireRollupsMatch(t, zone)

			// Late readings into buckets already refreshed.
			for _, b := range batches(late, 40) {
				e.write(t, b)
			}
			e.pass(t)
			e.requireRollupsMatch(t, zone)

			// Deletions and rewrites behind the sink's back, each with its
			// invalidation row, as an import or a correction must write:
			// a minute, an hour and a local day of one series lose every
			// reading, the last reading of a series goes (its buckets' last
			// changes), and values are rewritten in place.
			w := hierarchyWindows(t, zone)[0]
			var lastOfP3 time.Time
			require.NoError(t, e.pool.QueryRow(ctx, `SELECT max(time) FROM readings WHERE point = 'P3' AND variable = 'flow'`).Scan(&lastOfP3))
			var someMinute time.Time
			require.NoError(t, e.pool.QueryRow(ctx, `SELECT date_bin('1 minute', min(time), '2000-01-01') FROM readings WHERE point = 'P1' AND variable = 'flow' AND time > $1`, w.Add(time.Hour)).Scan(&someMinute))
			dayStart := time.Date(w.Year(), w.Month(), w.Day()+1, 0, 0, 0, 0, w.Location())
			for _, d := range []struct {
				sql      string
				from, to time.Time
			}{
				{`DELETE FROM readings WHERE point = 'P1' AND variable = 'flow' AND time >= $1 AND time < $2`, someMinute, someMinute.Add(time.Minute)},
				{`DELETE FROM readings WHERE point = 'P2' AND variable = 'level' AND time >= $1 AND time < $2`, w.Add(2 * time.Hour).Truncate(time.Hour), w.Add(3 * time.Hour).Truncate(time.Hour)},
				{`DELETE FROM readings WHERE point = 'P2' AND variable = 'flow' AND time >= $1 AND time < $2`, dayStart, dayStart.AddDate(0, 0, 1)},
				{`DELETE FROM readings WHERE point = 'P3' AND variable = 'flow' AND time >= $1 AND time < $2`, lastOfP3, lastOfP3.Add(time.Microsecond)},
				{`UPDATE readings SET value = -value * 3 WHERE point = 'P3' AND variable = 'level' AND time >= $1 AND time < $2`, w, w.Add(4 * time.Hour)},
			} {
				tag, err := e.pool.Exec(ctx, d.sql, d.from, d.to)
				require.NoError(t, err)
				require.Positive(t, tag.RowsAffected(), "%s [%s, %s)", d.sql, d.from, d.to)
				_, err = e.pool.Exec(ctx, `INSERT INTO rollup_invalidations (from_ts, to_ts) VALUES ($1, $2)`, d.from, d.to)
				require.NoError(t, err)
			}
			e.pass(t)
			e.requireRollupsMatch(t, zone)
			var left int
			require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM readings_1d WHERE point = 'P2' AND variable = 'flow' AND bucket = $1`, dayStart).Scan(&left))
			require.Zero(t, left, "a day that lost every reading is deleted")
		})
	}
}

// TestRollupsDaySourceIntegration checks which rollup readings_1d is
// recomputed from: hours where every UTC hour lies within one local date,
// minutes where only minutes do, raw readings where not even minutes do.
func TestRollupsDaySourceIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	if e.mode != timescale.ModePostgres {
		t.Skip("on TimescaleDB every continuous aggregate reads readings")
	}
	cases := []struct {
		zone     string
		from, to string
		want     string
	}{
		{"America/Santiago", "2026-04-03 00:00-03", "2026-04-07 00:00-04", "readings_1h_materialized"}, // DST ends
		{"America/Santiago", "2026-09-04 00:00-04", "2026-09-08 00:00-03", "readings_1h_materialized"}, // DST starts
		{"America/Santiago", "2026-01-01 00:00-03", "2026-12-31 00:00-03", "readings_1h_materialized"},
		{"Europe/Madrid", "2026-03-27 00:00+01", "2026-03-31 00:00+02", "readings_1h_materialized"},
		{"UTC", "2026-03-27 00:00Z", "2026-03-31 00:00Z", "readings_1h_materialized"},
		{"Asia/Kolkata", "2026-05-17 00:00+05:30", "2026-05-18 00:00+05:30", "readings_1m_materialized"},
		{"Asia/Kathmandu", "2026-05-17 00:00+05:45", "2026-05-18 00:00+05:45", "readings_1m_materialized"},
		{"Australia/Lord_Howe", "2026-04-03 00:00+11", "2026-04-07 00:00+10:30", "readings_1m_materialized"},
		{"Asia/Kathmandu", "1919-06-10 00:00+05:41:16", "1919-06-11 00:00+05:41:16", "readings"},
		{"America/Santiago", "1889-06-10 00:00-04:42:45", "1889-06-11 00:00-04:42:45", "readings"},
		{"Africa/Monrovia", "1971-06-10 00:00-00:44:30", "1971-06-11 00:00-00:44:30", "readings"},
		{"Africa/Monrovia", "1972-06-10 00:00Z", "1972-06-11 00:00Z", "readings_1h_materialized"},
	}
	for _, tc := range cases {
		t.Run(tc.zone+"/"+tc.from, func(t *testing.T) {
			var got string
			require.NoError(t, e.pool.QueryRow(context.Background(),
				`SELECT stackvps_rollup_day_source($1::timestamptz - interval '3 hours', $2::timestamptz + interval '3 hours', $3)`,
				tc.from, tc.to, tc.zone).Scan(&got))
			require.Equal(t, tc.want, got)
		})
	}
}

// TestRollupsNamedInvalidationIntegration: on plain PostgreSQL an
// invalidation row naming one rollup refreshes all three, lower first, so a
// rollup computed from another never reads stale input.
func TestRollupsNamedInvalidationIntegration(t *testing.T) {
	e := newRollupEnv(t, nil)
	if e.mode != timescale.ModePostgres {
		t.Skip("on TimescaleDB a row naming a rollup refreshes that continuous aggregate alone, from readings")
	}
	ctx := context.Background()
	for _, b := range batches(dataSet(), 300) {
		e.write(t, b)
	}
	e.pass(t)
	e.requireRollupsMatch(t, "America/Santiago")
	from := time.Date(2026, 5, 18, 3, 0, 0, 0, time.UTC) // 23:00 in Santiago
	for _, ru := range timescale.Rollups() {
		tag, err := e.pool.Exec(ctx, `UPDATE readings SET value = value + 1000 WHERE time >= $1 AND time < $2`, from, from.Add(time.Hour))
		require.NoError(t, err)
		require.Positive(t, tag.RowsAffected())
		_, err = e.pool.Exec(ctx, `INSERT INTO rollup_invalidations (rollup, from_ts, to_ts) VALUES ($1, $2, $3)`, string(ru), from, from.Add(time.Hour))
		require.NoError(t, err)
		e.pass(t)
		e.requireRollupsMatch(t, "America/Santiago")
	}
}

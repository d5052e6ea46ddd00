package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
)

// A config created after its data arrived: no compliance record will ever
// fill its past slots, so they are filled from the readings table, by the
// aggregate's rule, once the point has readings past the slot's minute.
// A record that arrives later replaces the values while the slot is unsent.
func TestBackfillFromReadingsIntegration(t *testing.T) {
	f := newFixture(t)
	f.point("P1")
	f.point("P2")
	c := f.config("P1", "2026-06-10")
	mean, err := f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: "P2", Source: compliance.SourceDGASubterraneas,
		Params: func() compliance.Params { p := dgaParams(); p.ValueMode = compliance.ValueMean; return p }(), StartDate: date("2026-06-10")})
	require.NoError(t, err)
	now := time.Date(2026, 6, 10, 15, 0, 0, 0, time.UTC)
	_, err = f.store.EnsureSlots(f.ctx, now, time.Hour, 720*time.Hour)
	require.NoError(t, err)

	// One reading a minute from 11:30 to 13:00 (13:00 included) on both
	// points: flow = minute of the day / 100, totalizer grows, level fixed.
	for _, p := range []string{"P1", "P2"} {
		for m := 11*60 + 30; m <= 13*60; m++ {
			at := time.Date(2026, 6, 10, 0, m, 0, 0, time.UTC)
			for v, val := range map[string]float64{"flow": float64(m) / 100, "totalizer": float64(1000 + m), "level": 7.5} {
				_, err := f.pool.Exec(f.ctx, `INSERT INTO readings (time, point, variable, value, quality, device) VALUES ($1, $2, $3, $4, 0, 'd')`,
					at, p, v, val)
				require.NoError(t, err)
			}
		}
	}
	slot12 := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)
	slot13 := slot12.Add(time.Hour)

	b, err := f.store.BackfillFromReadings(f.ctx, now, 10*time.Minute, 1000)
	require.NoError(t, err)
	require.Equal(t, 2, b.Filled, "12:00 of both points; 13:00 has no reading after its minute yet")
	page, err := f.store.ListSubmissions(f.ctx, store.SubmissionFilter{Point: "P1", From: slot12, To: slot13.Add(time.Second)})
	require.NoError(t, err)
	require.Len(t, page.Submissions, 2)
	byAt := map[time.Time]store.Submission{}
	for _, s := range page.Submissions {
		byAt[s.SlotAt] = s
	}
	s12 := byAt[slot12]
	require.Equal(t, store.StatusPending, s12.Status)
	require.Equal(t, 7.2, *s12.Data.Flow, "the reading at the slot instant")
	require.Equal(t, 1720.0, *s12.Data.Totalizer)
	require.Equal(t, 7.5, *s12.Data.Level)
	require.Equal(t, store.BackfillVersion, s12.DataVersion)
	require.Nil(t, byAt[slot13].Data, "the minute after 13:00 is not stored yet: not complete, not filled")

	// Mean mode: flow and level are the hour's means, the totalizer the
	// slot instant's.
	page, err = f.store.ListSubmissions(f.ctx, store.SubmissionFilter{ConfigID: mean.ID, From: slot12, To: slot12.Add(time.Second)})
	require.NoError(t, err)
	require.Len(t, page.Submissions, 1)
	m := page.Submissions[0].Data
	require.InDelta(t, (690.0+719.0)/2/100, *m.Flow, 1e-9, "the mean of 11:30..11:59")
	require.Equal(t, 1720.0, *m.Totalizer)

	// Checked slots are not looked at again before the interval.
	b, err = f.store.BackfillFromReadings(f.ctx, now.Add(time.Minute), 10*time.Minute, 1000)
	require.NoError(t, err)
	require.Zero(t, b.Checked)

	// A reading after 13:01 arrives: the next look fills 13:00.
	_, err = f.pool.Exec(f.ctx, `INSERT INTO readings (time, point, variable, value, quality, device) VALUES ($1, 'P1', 'flow', 1, 0, 'd')`,
		slot13.Add(2*time.Minute))
	require.NoError(t, err)
	b, err = f.store.BackfillFromReadings(f.ctx, now.Add(11*time.Minute), 10*time.Minute, 1000)
	require.NoError(t, err)
	require.Equal(t, 1, b.Filled)

	// A compliance record replaces backfilled values while the slot is unsent.
	res, err := f.store.FillSlot(f.ctx, c.ID, slot12, compliance.Values{Flow: ptr(9.9), Totalizer: ptr(1720.0), Level: ptr(7.5)}, 3)
	require.NoError(t, err)
	require.Equal(t, store.Filled, res)
}

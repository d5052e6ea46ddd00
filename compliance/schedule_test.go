package compliance_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
)

func loadLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func rfc(ts []time.Time) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Format(time.RFC3339)
	}
	return out
}

// Go's tzdata for 2026: America/Santiago falls back at 2026-04-05 03:00 UTC
// (Saturday 4 April, 24:00 -03 -> 23:00 -04) and springs forward at
// 2026-09-06 04:00 UTC (Sunday 6 September, 00:00 -04 -> 01:00 -03).
func TestSantiagoDST2026(t *testing.T) {
	scl := loadLoc(t, "America/Santiago")
	_, off := utc("2026-04-05T02:59:00Z").In(scl).Zone()
	require.Equal(t, -3*3600, off)
	_, off = utc("2026-04-05T03:00:00Z").In(scl).Zone()
	require.Equal(t, -4*3600, off)
	_, off = utc("2026-09-06T03:59:00Z").In(scl).Zone()
	require.Equal(t, -4*3600, off)
	_, off = utc("2026-09-06T04:00:00Z").In(scl).Zone()
	require.Equal(t, -3*3600, off)
}

func TestSlotsBetween(t *testing.T) {
	scl := loadLoc(t, "America/Santiago")
	gmt4 := loadLoc(t, "Etc/GMT+4")
	cases := []struct {
		name     string
		freq     string
		loc      *time.Location
		from, to string
		want     []string
	}{
		{"hourly, fall-back: the repeated 23:00 is two instants", compliance.Hourly, scl,
			"2026-04-05T00:00:00Z", "2026-04-05T06:00:00Z",
			[]string{"2026-04-04T21:00:00-03:00", "2026-04-04T22:00:00-03:00", "2026-04-04T23:00:00-03:00",
				"2026-04-04T23:00:00-04:00", "2026-04-05T00:00:00-04:00", "2026-04-05T01:00:00-04:00"}},
		{"hourly, spring-forward: no 00:00", compliance.Hourly, scl,
			"2026-09-06T02:00:00Z", "2026-09-06T06:00:00Z",
			[]string{"2026-09-05T22:00:00-04:00", "2026-09-05T23:00:00-04:00", "2026-09-06T01:00:00-03:00", "2026-09-06T02:00:00-03:00"}},
		{"hourly, from inside an hour, to exclusive", compliance.Hourly, gmt4,
			"2026-06-11T16:30:00Z", "2026-06-11T19:00:00Z",
			[]string{"2026-06-11T13:00:00-04:00", "2026-06-11T14:00:00-04:00"}},
		{"hourly, Etc/GMT+4 has no DST", compliance.Hourly, gmt4,
			"2026-09-06T02:00:00Z", "2026-09-06T06:00:00Z",
			[]string{"2026-09-05T22:00:00-04:00", "2026-09-05T23:00:00-04:00", "2026-09-06T00:00:00-04:00", "2026-09-06T01:00:00-04:00"}},
		{"daily across both transitions in Santiago", compliance.Daily, scl,
			"2026-04-03T00:00:00Z", "2026-04-06T12:00:00Z",
			[]string{"2026-04-03T00:00:00-03:00", "2026-04-04T00:00:00-03:00", "2026-04-05T00:00:00-04:00", "2026-04-06T00:00:00-04:00"}},
		{"daily, spring-forward day starts at 01:00", compliance.Daily, scl,
			"2026-09-05T00:00:00Z", "2026-09-07T12:00:00Z",
			[]string{"2026-09-05T00:00:00-04:00", "2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"}},
		{"daily Etc/GMT+4", compliance.Daily, gmt4,
			"2026-09-05T04:00:00Z", "2026-09-07T04:00:00Z",
			[]string{"2026-09-05T00:00:00-04:00", "2026-09-06T00:00:00-04:00"}},
		{"monthly", compliance.Monthly, scl,
			"2026-03-15T00:00:00Z", "2026-06-01T04:00:00Z",
			[]string{"2026-04-01T00:00:00-03:00", "2026-05-01T00:00:00-04:00"}},
		{"monthly, to inclusive of the slot", compliance.Monthly, gmt4,
			"2026-01-01T04:00:00Z", "2026-03-01T04:00:01Z",
			[]string{"2026-01-01T00:00:00-04:00", "2026-02-01T00:00:00-04:00", "2026-03-01T00:00:00-04:00"}},
		{"semiannual", compliance.Semiannual, scl,
			"2025-12-01T00:00:00Z", "2027-01-02T00:00:00Z",
			[]string{"2026-01-01T00:00:00-03:00", "2026-07-01T00:00:00-04:00", "2027-01-01T00:00:00-03:00"}},
		{"unknown frequency", "weekly", scl, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", nil},
		{"empty range", compliance.Hourly, scl, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := compliance.SlotsBetween(c.freq, c.loc, utc(c.from), utc(c.to))
			if c.want == nil {
				require.Empty(t, got)
				return
			}
			require.Equal(t, c.want, rfc(got))
			for _, s := range got {
				require.True(t, compliance.IsSlot(c.freq, c.loc, s), s)
			}
		})
	}
}

func TestSlotsAreUniqueAndConsistentOverAYear(t *testing.T) {
	scl := loadLoc(t, "America/Santiago")
	from, to := utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z")
	hours := compliance.SlotsBetween(compliance.Hourly, scl, from, to)
	require.Len(t, hours, 8760, "every UTC hour is a Santiago slot: offsets are whole hours")
	seen := map[time.Time]bool{}
	for _, h := range hours {
		require.False(t, seen[h.UTC()])
		seen[h.UTC()] = true
	}
	days := compliance.SlotsBetween(compliance.Daily, scl, from, to)
	require.Len(t, days, 365)
	for _, d := range days {
		require.True(t, seen[d.UTC()], "a daily slot is an hourly slot too: %s", d)
	}
	// IsSlot agrees with SlotsBetween on every quarter hour.
	n := 0
	for t0 := from; t0.Before(to); t0 = t0.Add(15 * time.Minute) {
		if compliance.IsSlot(compliance.Daily, scl, t0) {
			n++
		}
	}
	require.Equal(t, 365, n)
}

func TestIsSlot(t *testing.T) {
	scl := loadLoc(t, "America/Santiago")
	require.True(t, compliance.IsSlot(compliance.Hourly, scl, utc("2026-06-11T17:00:00Z")))
	require.False(t, compliance.IsSlot(compliance.Hourly, scl, utc("2026-06-11T17:00:01Z")))
	require.False(t, compliance.IsSlot(compliance.Daily, scl, utc("2026-09-06T03:00:00Z")), "00:00 does not exist that day")
	require.True(t, compliance.IsSlot(compliance.Daily, scl, utc("2026-09-06T04:00:00Z")))
	require.False(t, compliance.IsSlot(compliance.Monthly, scl, utc("2026-09-06T04:00:00Z")))
	require.True(t, compliance.IsSlot(compliance.Semiannual, scl, utc("2026-07-01T04:00:00Z")))
	require.False(t, compliance.IsSlot(compliance.Semiannual, scl, utc("2026-08-01T04:00:00Z")))
	require.False(t, compliance.IsSlot("weekly", scl, utc("2026-07-01T04:00:00Z")))
}

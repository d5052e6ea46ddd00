package schedule_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/stages/scheduler/schedule"
)

func santiago(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("America/Santiago")
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

func TestParse(t *testing.T) {
	good := []string{"every 1h", "every 1s", " every   6h ", "daily 07:00", "daily 0:05", "0 7 * * *", "*/15 * * * 1-5",
		"0 0 1,15 * *", "30 2 * 1-12/3 0,7", "5/20 * * * *"}
	for _, s := range good {
		_, err := schedule.Parse(s)
		require.NoError(t, err, s)
	}
	bad := []string{"", "every", "every 0s", "every 1.5s", "every -1h", "every 1x", "daily", "daily 24:00", "daily 7",
		"daily 07:60", "daily 07:5", "hourly", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
		"* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *"}
	for _, s := range bad {
		_, err := schedule.Parse(s)
		require.ErrorIs(t, err, schedule.ErrSyntax, "%q", s)
	}
}

func TestNextPrev(t *testing.T) {
	loc := santiago(t)
	cases := []struct {
		name, spec string
		at         string
		prev, next string
	}{
		{name: "every hour on the hour", spec: "every 1h", at: "2026-03-10T15:20:00Z", prev: "2026-03-10T15:00:00Z", next: "2026-03-10T16:00:00Z"},
		{name: "every hour exactly on", spec: "every 1h", at: "2026-03-10T15:00:00Z", prev: "2026-03-10T15:00:00Z", next: "2026-03-10T16:00:00Z"},
		{name: "every 6h UTC-aligned", spec: "every 6h", at: "2026-03-10T13:00:00Z", prev: "2026-03-10T12:00:00Z", next: "2026-03-10T18:00:00Z"},
		{name: "every 1s", spec: "every 1s", at: "2026-03-10T13:00:00.7Z", prev: "2026-03-10T13:00:00Z", next: "2026-03-10T13:00:01Z"},
		// Summer (-03): 07:00 local is 10:00 UTC.
		{name: "daily summer", spec: "daily 07:00", at: "2026-03-10T12:00:00Z", prev: "2026-03-10T10:00:00Z", next: "2026-03-11T10:00:00Z"},
		{name: "daily before today's", spec: "daily 07:00", at: "2026-03-10T09:59:59Z", prev: "2026-03-09T10:00:00Z", next: "2026-03-10T10:00:00Z"},
		// Winter (-04): 07:00 local is 11:00 UTC.
		{name: "daily winter", spec: "daily 07:00", at: "2026-06-10T12:00:00Z", prev: "2026-06-10T11:00:00Z", next: "2026-06-11T11:00:00Z"},
		// Clocks go back at 2026-04-05 00:00 -03 (03:00Z) to 23:00 -04: the
		// day of Apr 5 is 25 hours long.
		{name: "daily across fall back", spec: "daily 07:00", at: "2026-04-04T12:00:00Z", prev: "2026-04-04T10:00:00Z", next: "2026-04-05T11:00:00Z"},
		// 23:30 on Apr 4 happens twice (02:30Z and 03:30Z): first only.
		{name: "repeated wall time runs once", spec: "daily 23:30", at: "2026-04-05T02:00:00Z", prev: "2026-04-04T02:30:00Z", next: "2026-04-05T02:30:00Z"},
		{name: "repeated wall time not again", spec: "daily 23:30", at: "2026-04-05T02:30:00Z", prev: "2026-04-05T02:30:00Z", next: "2026-04-06T03:30:00Z"},
		// Clocks jump at 2026-09-06 00:00 -04 (04:00Z) to 01:00 -03: 00:30
		// does not exist that day and runs at the jump.
		{name: "skipped wall time runs at the jump", spec: "daily 00:30", at: "2026-09-05T12:00:00Z", prev: "2026-09-05T04:30:00Z", next: "2026-09-06T04:00:00Z"},
		{name: "after the jump", spec: "daily 00:30", at: "2026-09-06T04:00:00Z", prev: "2026-09-06T04:00:00Z", next: "2026-09-07T03:30:00Z"},
		{name: "daily across spring forward", spec: "daily 07:00", at: "2026-09-05T12:00:00Z", prev: "2026-09-05T11:00:00Z", next: "2026-09-06T10:00:00Z"},
		{name: "cron weekdays", spec: "0 8 * * 1-5", at: "2026-03-13T12:00:00Z", prev: "2026-03-13T11:00:00Z", next: "2026-03-16T11:00:00Z"},
		{name: "cron dom or dow", spec: "0 0 1 * 0", at: "2026-03-02T12:00:00Z", prev: "2026-03-01T03:00:00Z", next: "2026-03-08T03:00:00Z"},
		{name: "cron every 15 minutes", spec: "*/15 * * * *", at: "2026-03-10T15:31:00Z", prev: "2026-03-10T15:30:00Z", next: "2026-03-10T15:45:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := schedule.Parse(tc.spec)
			require.NoError(t, err)
			at := utc(tc.at)
			require.Equal(t, utc(tc.prev), s.Prev(at, loc).UTC(), "prev")
			require.Equal(t, utc(tc.next), s.Next(at, loc).UTC(), "next")
		})
	}
}

// TestDailyAcrossYear walks a daily schedule through a whole year of
// Santiago time: one occurrence per local day, always at the wall time, and
// Next/Prev agree.
func TestDailyAcrossYear(t *testing.T) {
	loc := santiago(t)
	s, err := schedule.Parse("daily 07:00")
	require.NoError(t, err)
	at := utc("2026-01-01T00:00:00Z")
	var days int
	for at.Before(utc("2027-01-01T00:00:00Z")) {
		n := s.Next(at, loc)
		require.Equal(t, n, s.Prev(n, loc))
		if days > 0 {
			require.Equal(t, at, s.Prev(n.Add(-time.Nanosecond), loc), "prev of next-1ns after %s", at)
		}
		ln := n.In(loc)
		require.Equal(t, 7, ln.Hour())
		require.Equal(t, 0, ln.Minute())
		at = n
		days++
	}
	require.Equal(t, 366, days) // Jan 1 2026 to Jan 1 2027 inclusive
}

func TestWallTimeMidnightOfShortDay(t *testing.T) {
	loc := santiago(t)
	// 2026-09-06 starts at 01:00 local, the jump.
	require.Equal(t, utc("2026-09-06T04:00:00Z"), schedule.WallTime(2026, 9, 6, 0, 0, loc).UTC())
	// 2026-04-05 starts at its (only) midnight, 00:00 -04.
	require.Equal(t, utc("2026-04-05T04:00:00Z"), schedule.WallTime(2026, 4, 5, 0, 0, loc).UTC())
	require.Equal(t, utc("2026-04-04T03:00:00Z"), schedule.WallTime(2026, 4, 4, 0, 0, loc).UTC())
}

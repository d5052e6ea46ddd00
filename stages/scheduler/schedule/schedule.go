// Package schedule parses the scheduler's job schedules and computes their
// occurrences. Three forms are accepted:
//
//	every <duration>   "every 1h", "every 6h", "every 30s": the instants that
//	                   are whole multiples of the duration since the Unix
//	                   epoch (1h: every hour on the hour, UTC; 6h: 00:00,
//	                   06:00, 12:00 and 18:00 UTC), whatever the time zone.
//	                   The duration is whole seconds, at least 1s.
//	daily HH:MM        "daily 07:00": every day at that wall-clock time in
//	                   the scheduler's time zone; the same as cron "MM HH * * *".
//	<5-field cron>     "minute hour day-of-month month day-of-week" in the
//	                   time zone, each field "*", a number, a range "a-b", a
//	                   step "*/n" or "a-b/n", or a comma-separated list of
//	                   those. Day of week 0-7 (0 and 7 are Sunday). When both
//	                   day fields are restricted, a day matching either runs
//	                   (as in Vixie cron). No names (JAN, MON) and no
//	                   seconds field.
//
// Daylight saving time, for wall-clock schedules (daily, cron): a time that
// does not exist on a day (clocks jump forward over it) runs at the instant
// the clocks jump, once; a time that happens twice (clocks go back) runs at
// its first occurrence only. America/Santiago moves its clocks at midnight,
// so "daily 00:30" runs at 01:00 local (the jump) on the first Sunday of
// September, and "daily 23:30" runs once, in the first 23:30, on the
// Saturday before the first Sunday of April.
package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is a parsed schedule. The zero value has no occurrences.
type Schedule struct {
	spec  string
	every time.Duration
	cron  *cron
}

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("invalid schedule")

// Parse parses spec (see the package comment). Its errors wrap ErrSyntax and
// say what is accepted.
func Parse(spec string) (Schedule, error) {
	s := strings.Join(strings.Fields(spec), " ")
	switch {
	case strings.HasPrefix(s, "every "):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "every "))
		if err != nil {
			return Schedule{}, fmt.Errorf("%w %q: every needs a duration such as \"every 1h\": %w", ErrSyntax, spec, err)
		}
		if d < time.Second || d%time.Second != 0 {
			return Schedule{}, fmt.Errorf("%w %q: the period must be whole seconds, at least 1s", ErrSyntax, spec)
		}
		return Schedule{spec: s, every: d}, nil
	case strings.HasPrefix(s, "daily "):
		hh, mm, ok := strings.Cut(strings.TrimPrefix(s, "daily "), ":")
		h, herr := strconv.Atoi(hh)
		m, merr := strconv.Atoi(mm)
		if !ok || herr != nil || merr != nil || len(mm) != 2 || h < 0 || h > 23 || m < 0 || m > 59 {
			return Schedule{}, fmt.Errorf("%w %q: daily needs a time HH:MM such as \"daily 07:00\"", ErrSyntax, spec)
		}
		c, _ := parseCron(fmt.Sprintf("%d %d * * *", m, h))
		return Schedule{spec: s, cron: c}, nil
	}
	c, err := parseCron(s)
	if err != nil {
		return Schedule{}, fmt.Errorf("%w %q: want \"every <duration>\", \"daily HH:MM\" or a 5-field cron expression: %w", ErrSyntax, spec, err)
	}
	return Schedule{spec: s, cron: c}, nil
}

// String returns the schedule as parsed, with spaces normalized.
func (s Schedule) String() string { return s.spec }

// IsZero reports whether s is the zero Schedule.
func (s Schedule) IsZero() bool { return s.every == 0 && s.cron == nil }

// searchDays bounds the search for a cron occurrence: a schedule that
// matches no day within it (February 30) has none.
const searchDays = 5 * 366

// Prev returns the latest occurrence at or before t, with wall-clock
// schedules evaluated in loc; the zero time when there is none.
func (s Schedule) Prev(t time.Time, loc *time.Location) time.Time {
	switch {
	case s.every > 0:
		n := t.UnixNano()
		d := s.every.Nanoseconds()
		q := n / d
		if n%d < 0 {
			q--
		}
		return time.Unix(0, q*d).UTC()
	case s.cron != nil:
		return s.cron.prev(t, loc)
	}
	return time.Time{}
}

// Next returns the first occurrence strictly after t, with wall-clock
// schedules evaluated in loc; the zero time when there is none.
func (s Schedule) Next(t time.Time, loc *time.Location) time.Time {
	switch {
	case s.every > 0:
		return s.Prev(t, loc).Add(s.every)
	case s.cron != nil:
		return s.cron.next(t, loc)
	}
	return time.Time{}
}

// cron is a parsed 5-field expression: the allowed values of each field.
type cron struct {
	minutes, hours []int
	doms, months   [32]bool
	dows           [7]bool
	domStar        bool
	dowStar        bool
}

func parseCron(s string) (*cron, error) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return nil, fmt.Errorf("%d fields, want 5", len(f))
	}
	var c cron
	mins, err := parseField(f[0], "minute", 0, 59)
	if err != nil {
		return nil, err
	}
	hrs, err := parseField(f[1], "hour", 0, 23)
	if err != nil {
		return nil, err
	}
	doms, err := parseField(f[2], "day of month", 1, 31)
	if err != nil {
		return nil, err
	}
	months, err := parseField(f[3], "month", 1, 12)
	if err != nil {
		return nil, err
	}
	dows, err := parseField(f[4], "day of week", 0, 7)
	if err != nil {
		return nil, err
	}
	c.minutes, c.hours = mins, hrs
	for _, d := range doms {
		c.doms[d] = true
	}
	for _, m := range months {
		c.months[m] = true
	}
	for _, d := range dows {
		c.dows[d%7] = true
	}
	c.domStar = strings.HasPrefix(f[2], "*")
	c.dowStar = strings.HasPrefix(f[4], "*")
	return &c, nil
}

// parseField returns the sorted distinct values a field allows.
func parseField(s, name string, lo, hi int) ([]int, error) {
	var set [64]bool
	for _, part := range strings.Split(s, ",") {
		rng, stepS, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepS)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s: bad step %q", name, part)
			}
			step = n
		}
		a, b := lo, hi
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			as, bs, _ := strings.Cut(rng, "-")
			var err1, err2 error
			a, err1 = strconv.Atoi(as)
			b, err2 = strconv.Atoi(bs)
			if err1 != nil || err2 != nil || a > b {
				return nil, fmt.Errorf("%s: bad range %q", name, part)
			}
		default:
			n, err := strconv.Atoi(rng)
			if err != nil {
				return nil, fmt.Errorf("%s: bad value %q", name, part)
			}
			a, b = n, n
			if hasStep {
				b = hi
			}
		}
		if a < lo || b > hi {
			return nil, fmt.Errorf("%s: %q is outside %d-%d", name, part, lo, hi)
		}
		for v := a; v <= b; v += step {
			set[v] = true
		}
	}
	var out []int
	for v := lo; v <= hi; v++ {
		if set[v] {
			out = append(out, v)
		}
	}
	return out, nil
}

func (c *cron) matchDay(y int, m time.Month, d int) bool {
	if !c.months[m] {
		return false
	}
	dom := c.doms[d]
	dow := c.dows[int(time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Weekday())]
	switch {
	case c.domStar && c.dowStar:
		return true
	case c.domStar:
		return dow
	case c.dowStar:
		return dom
	}
	return dom || dow
}

// next scans local days forward from the day before t's (a wall time of the
// previous day can fall after t around a transition).
func (c *cron) next(t time.Time, loc *time.Location) time.Time {
	lt := t.In(loc)
	day := time.Date(lt.Year(), lt.Month(), lt.Day()-1, 12, 0, 0, 0, time.UTC)
	for range searchDays {
		y, m, d := day.Date()
		if c.matchDay(y, m, d) {
			for _, h := range c.hours {
				for _, mi := range c.minutes {
					if u := WallTime(y, m, d, h, mi, loc); u.After(t) {
						return u
					}
				}
			}
		}
		day = day.AddDate(0, 0, 1)
	}
	return time.Time{}
}

// prev scans local days backward from the day after t's.
func (c *cron) prev(t time.Time, loc *time.Location) time.Time {
	lt := t.In(loc)
	day := time.Date(lt.Year(), lt.Month(), lt.Day()+1, 12, 0, 0, 0, time.UTC)
	for range searchDays {
		y, m, d := day.Date()
		if c.matchDay(y, m, d) {
			for i := len(c.hours) - 1; i >= 0; i-- {
				for j := len(c.minutes) - 1; j >= 0; j-- {
					if u := WallTime(y, m, d, c.hours[i], c.minutes[j], loc); !u.After(t) {
						return u
					}
				}
			}
		}
		day = day.AddDate(0, 0, -1)
	}
	return time.Time{}
}

// WallTime returns the instant the clocks of loc show the given date and
// time (seconds zero): its first occurrence when it happens twice (clocks
// going back), and the instant the clocks jump when it does not happen
// (clocks going forward over it). Unlike time.Date, the choice is defined.
// Midnight of a day that starts at 01:00 (America/Santiago in September) is
// that day's first instant.
func WallTime(y int, m time.Month, d, h, mi int, loc *time.Location) time.Time {
	naive := time.Date(y, m, d, h, mi, 0, 0, time.UTC)
	var cands [3]time.Time
	for i, probe := range [3]time.Duration{-36 * time.Hour, 0, 36 * time.Hour} {
		_, off := naive.Add(probe).In(loc).Zone()
		cands[i] = naive.Add(-time.Duration(off) * time.Second)
	}
	var best, lo, hi time.Time
	for i, u := range cands {
		if i == 0 || u.Before(lo) {
			lo = u
		}
		if i == 0 || u.After(hi) {
			hi = u
		}
		lu := u.In(loc)
		if lu.Year() == y && lu.Month() == m && lu.Day() == d && lu.Hour() == h && lu.Minute() == mi && lu.Second() == 0 {
			if best.IsZero() || u.Before(best) {
				best = u
			}
		}
	}
	if !best.IsZero() {
		return best
	}
	// In a gap: the latest candidate lies after the jump, in the zone the
	// clocks jumped into; that zone's start is the jump.
	start, _ := hi.In(loc).ZoneBounds()
	if start.IsZero() || start.Before(lo) {
		return hi
	}
	return start
}

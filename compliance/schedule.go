package compliance

import "time"

// Slots are instants. An hourly slot is every instant whose wall clock in
// loc reads minute 0, second 0: across a spring-forward the missing hour has
// no slot, and across a fall-back the repeated hour has two slots (two
// distinct instants with the same wall clock; a source that reports wall
// clocks, such as DGA in America/Santiago, would see the second one as a
// duplicate, which is why DGA defaults to the fixed Etc/GMT+4). A daily slot
// is the first instant of a local day (00:00, or the first wall time that
// exists when midnight is skipped, as Chile's spring-forward does), a
// monthly slot that of day 1 and a semiannual slot that of 1 January and 1
// July.

// dayStart returns the first instant of the local day y-m-d in loc: the
// earliest quarter hour whose local date is y-m-d (every real zone offset is
// a multiple of 15 minutes, and a day starts within a few hours of
// time.Date's guess).
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	guess := time.Date(y, m, d, 0, 0, 0, 0, loc)
	t := guess.Add(-3 * time.Hour).Truncate(15 * time.Minute)
	for range 48 {
		if ty, tm, td := t.In(loc).Date(); ty == y && tm == m && td == d {
			return t.In(loc)
		}
		t = t.Add(15 * time.Minute)
	}
	return guess
}

// IsSlot reports whether t is a slot of freq in loc. An unknown frequency
// has no slots.
func IsSlot(freq string, loc *time.Location, t time.Time) bool {
	l := t.In(loc)
	switch freq {
	case Hourly:
		return l.Minute() == 0 && l.Second() == 0 && l.Nanosecond() == 0
	case Daily, Monthly, Semiannual:
		y, m, d := l.Date()
		if freq != Daily && d != 1 {
			return false
		}
		if freq == Semiannual && m != time.January && m != time.July {
			return false
		}
		return t.Equal(dayStart(y, m, d, loc))
	}
	return false
}

// SlotsBetween returns the slots of freq in loc within [from, to), in
// order, each in loc. An unknown frequency has none.
func SlotsBetween(freq string, loc *time.Location, from, to time.Time) []time.Time {
	if !from.Before(to) || !ValidFrequency(freq) {
		return nil
	}
	var out []time.Time
	if freq == Hourly {
		// Every real zone offset is a multiple of 15 minutes, so every wall
		// clock minute 0 is an instant on a 15-minute boundary.
		const q = 15 * time.Minute
		t := from.Truncate(q)
		if t.Before(from) {
			t = t.Add(q)
		}
		for ; t.Before(to); t = t.Add(q) {
			if IsSlot(Hourly, loc, t) {
				out = append(out, t.In(loc))
				t = t.Add(time.Hour - 2*q) // the next one is at least 45 minutes away
			}
		}
		return out
	}
	y, m, d := from.In(loc).AddDate(0, 0, -1).Date()
	cur := time.Date(y, m, d, 12, 0, 0, 0, loc)
	if freq != Daily {
		cur = time.Date(y, m, 1, 12, 0, 0, 0, loc)
	}
	for {
		y, m, d := cur.Date()
		t := dayStart(y, m, d, loc)
		if !t.Before(to) {
			return out
		}
		if !t.Before(from) && IsSlot(freq, loc, t) {
			out = append(out, t)
		}
		if freq == Daily {
			cur = time.Date(y, m, d+1, 12, 0, 0, 0, loc)
		} else {
			cur = time.Date(y, m+1, 1, 12, 0, 0, 0, loc)
		}
	}
}

package timescale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
)

// Rollup names one of the rollups of readings: readings_1m, readings_1h and
// readings_1d. Each has the columns bucket, point, variable, min, max, avg,
// last (the value at the latest time in the bucket) and count, one row per
// (point, variable, bucket). Minutes and hours are UTC-aligned; days are
// local to rollups.day_timezone.
type Rollup string

// The rollups, in refresh order: a pass refreshes 1m, then 1h, then 1d, one
// at a time, never concurrently.
const (
	Rollup1m Rollup = "1m"
	Rollup1h Rollup = "1h"
	Rollup1d Rollup = "1d"
)

// Rollups returns the rollups in refresh order.
func Rollups() []Rollup { return []Rollup{Rollup1m, Rollup1h, Rollup1d} }

// Table returns the rollup's table or continuous aggregate, readings_<r>.
func (r Rollup) Table() string { return "readings_" + string(r) }

func (r Rollup) index() int {
	switch r {
	case Rollup1m:
		return 0
	case Rollup1h:
		return 1
	default:
		return 2
	}
}

// Coalescing and chunking, per rollup (index as Rollup.index).
var (
	// mergeGap: touched ranges closer than this are refreshed as one, so a
	// scatter of late readings costs one refresh, not one per bucket
	// (timescaledb#2867). Days merge only when adjacent: on TimescaleDB a
	// day costs a day of raw readings to recompute (on plain PostgreSQL
	// only its hours, or its minutes in zones like Asia/Kolkata).
	mergeGap = [3]time.Duration{15 * time.Minute, 2 * time.Hour, 0}
	// maxPiece bounds one refresh call, so a backfill of months is done in
	// bounded transactions that make progress one piece at a time.
	maxPiece = [3]time.Duration{24 * time.Hour, 7 * 24 * time.Hour, 31 * 24 * time.Hour}
)

// maxRanges bounds the ranges kept per rollup: past it the two closest are
// merged, so memory stays bounded whatever the pattern of late readings.
const maxRanges = 64

// maxInvalidationRows bounds the rollup_invalidations rows one pass reads.
const maxInvalidationRows = 10000

// bucketer computes rollup bucket boundaries exactly as the database does:
// UTC minutes and hours, and local days in loc as PostgreSQL's
// date_trunc('day', t AT TIME ZONE tz) AT TIME ZONE tz and TimescaleDB's
// time_bucket('1 day', t, tz) do.
type bucketer struct{ loc *time.Location }

// floor returns the start of the bucket of r that contains t.
func (b bucketer) floor(r Rollup, t time.Time) time.Time {
	switch r {
	case Rollup1m:
		return t.Truncate(time.Minute)
	case Rollup1h:
		return t.Truncate(time.Hour)
	}
	// The local date's midnight, as the database reads it. Where midnight
	// happens twice this may be after t (the database's bucket of t starts
	// there too).
	lt := t.In(b.loc)
	return b.midnight(lt.Year(), lt.Month(), lt.Day())
}

// next returns the start of the bucket after the one that starts at start.
func (b bucketer) next(r Rollup, start time.Time) time.Time {
	switch r {
	case Rollup1m:
		return start.Add(time.Minute)
	case Rollup1h:
		return start.Add(time.Hour)
	}
	lt := start.In(b.loc)
	// start may be 01:00 local when midnight does not exist: its date is
	// still the bucket's.
	return b.midnight(lt.Year(), lt.Month(), lt.Day()+1).UTC()
}

// ceil returns the first bucket boundary at or after t.
func (b bucketer) ceil(r Rollup, t time.Time) time.Time {
	f := b.floor(r, t)
	if f.Equal(t) {
		return f
	}
	return b.next(r, f)
}

// midnight returns the instant PostgreSQL gives local time 00:00 of day
// y-m-d (a day past the month's end rolls over). Where a daylight-saving
// change makes midnight missing (Chile's September change) or double,
// PostgreSQL takes the later of the two readings of it (the offset before a
// spring-forward, after a fall-back); Go's time.Date does not promise which
// it takes, so this decides.
func (b bucketer) midnight(y int, m time.Month, d int) time.Time {
	naive := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	var valid, any time.Time
	for _, probe := range []time.Time{
		time.Date(y, m, d-1, 12, 0, 0, 0, b.loc),
		time.Date(y, m, d, 0, 0, 0, 0, b.loc),
		time.Date(y, m, d+1, 12, 0, 0, 0, b.loc),
	} {
		_, off := probe.Zone()
		c := naive.Add(-time.Duration(off) * time.Second)
		if c.After(any) {
			any = c
		}
		lc := c.In(b.loc)
		if lc.Year() == naive.Year() && lc.Month() == naive.Month() && lc.Day() == naive.Day() &&
			lc.Hour() == 0 && lc.Minute() == 0 && lc.Second() == 0 && c.After(valid) {
			valid = c
		}
	}
	if !valid.IsZero() {
		return valid
	}
	return any // midnight does not exist: the offset before the jump
}

// timeRange is [from, to).
type timeRange struct{ from, to time.Time }

// rangeSet is a set of disjoint, sorted, non-adjacent ranges, bounded in
// size: ranges closer than gap merge, and past limit ranges the two closest
// merge (refreshing a little more, never less).
type rangeSet struct {
	rs    []timeRange
	gap   time.Duration
	limit int
}

func (s *rangeSet) add(r timeRange) {
	if !r.from.Before(r.to) {
		return
	}
	i := sort.Search(len(s.rs), func(i int) bool { return !s.rs[i].to.Add(s.gap).Before(r.from) })
	j := i
	for j < len(s.rs) && !s.rs[j].from.After(r.to.Add(s.gap)) {
		if s.rs[j].from.Before(r.from) {
			r.from = s.rs[j].from
		}
		if s.rs[j].to.After(r.to) {
			r.to = s.rs[j].to
		}
		j++
	}
	s.rs = append(s.rs[:i], append([]timeRange{r}, s.rs[j:]...)...)
	for s.limit > 0 && len(s.rs) > s.limit {
		k := 0
		for n := 1; n < len(s.rs)-1; n++ {
			if s.rs[n+1].from.Sub(s.rs[n].to) < s.rs[k+1].from.Sub(s.rs[k].to) {
				k = n
			}
		}
		s.rs[k].to = s.rs[k+1].to
		s.rs = append(s.rs[:k+1], s.rs[k+2:]...)
	}
}

// remove takes [from, to) out of the set.
func (s *rangeSet) remove(r timeRange) {
	var out []timeRange
	for _, x := range s.rs {
		if !x.to.After(r.from) || !x.from.Before(r.to) {
			out = append(out, x)
			continue
		}
		if x.from.Before(r.from) {
			out = append(out, timeRange{x.from, r.from})
		}
		if x.to.After(r.to) {
			out = append(out, timeRange{r.to, x.to})
		}
	}
	s.rs = out
}

func (s *rangeSet) len() int { return len(s.rs) }

// RefresherConfig configures a Refresher.
type RefresherConfig struct {
	// Rollups is the rollups section: refresh_delay and raw_retention are
	// used here, day_timezone is read from the database (ApplyPolicies
	// writes it there).
	Rollups config.Rollups
	// Registerer receives the refresher's metrics. Required.
	Registerer prometheus.Registerer
	// Log is the refresher's logger. Required.
	Log *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// PollInterval is how often the refresher looks at rollup_invalidations
	// without being touched (rows left by a crash, or written by another
	// process whose refresher is gone). Default one minute.
	PollInterval time.Duration
	// RetentionInterval is how often raw retention runs on plain PostgreSQL
	// (TimescaleDB has its own policy). Default six hours.
	RetentionInterval time.Duration
}

// Refresher keeps the rollups fresh: it folds the time ranges that
// committed batches touched into readings_1m, readings_1h and readings_1d,
// recomputing only the buckets those ranges intersect (CALL
// refresh_continuous_aggregate on TimescaleDB, stackvps_refresh_rollup on
// plain PostgreSQL).
//
// On TimescaleDB each continuous aggregate is computed from readings. On
// plain PostgreSQL the rollups are hierarchical, as TimescaleDB's
// hierarchical continuous aggregates are (migration 0010): readings_1m from
// readings, readings_1h from readings_1m, readings_1d from readings_1h
// where every UTC hour lies within one local date of the day zone (else
// from readings_1m, else from readings; the database checks), so a pass
// reads a touched minute of raw readings, not the whole hour and day. A
// rollup is then only as fresh as the one below it, which the order of a
// pass guarantees: every range is refreshed in 1m, then 1h, then 1d, and a
// failed refresh ends the pass, so 1h or 1d never reads a range of 1m that
// the pass has not refreshed yet. For the same reason an invalidation row
// that names one rollup refreshes all three on plain PostgreSQL (the lower
// ones so the named one reads fresh input, the higher ones because they
// derive from it); on TimescaleDB it refreshes the named one alone.
//
// The ranges come from rollup_invalidations, which the sink's Writer fills
// in each batch's own transaction, and from Touch. A touch arms a timer of
// rollups.refresh_delay; touches until it fires join the same pass, so a
// stream of late readings makes at most one pass per delay, never a refresh
// storm; and after a long pass it rests three times the pass's duration
// first (restPerPass), so refreshing never takes more than a quarter of the
// time. A pass aligns the ranges to each rollup's buckets, merges those
// that overlap or are close, and refreshes 1m, then 1h, then 1d, one call at
// a time. Passes are serialized across processes by an advisory lock, so
// several sinks never refresh concurrently. Ranges that reach before the
// raw retention horizon are clipped: recomputing a bucket whose raw readings
// were dropped would erase it.
//
// A pass never refreshes an open bucket: the rollups aggregate their open
// buckets at query time, TimescaleDB's continuous aggregates with
// real-time aggregation, and on plain PostgreSQL views over a materialized
// table before a watermark and live aggregation from it on (migration
// 0011). On TimescaleDB a pass refreshes the pending ranges of the buckets
// that closed settle ago and writes the rest back to rollup_invalidations
// (settleHeld). On plain PostgreSQL it refreshes the pending ranges before
// each rollup's watermark (late readings), then moves the watermarks up to
// the last minute that ended settle ago, materializing the buckets that
// closed since (advance). Either way a minute is computed from raw
// readings once, and again only if late readings touch it, not once per
// pass while it is open.
//
// A failed refresh keeps its ranges (and their invalidation rows) and is
// retried after the delay, doubling up to a minute. On plain PostgreSQL the
// refresher also applies raw retention every RetentionInterval.
type Refresher struct {
	pool      *pgxpool.Pool
	mode      Mode
	zone      string
	b         bucketer
	delay     time.Duration
	retention time.Duration
	poll      time.Duration
	retEvery  time.Duration
	log       *slog.Logger
	now       func() time.Time
	met       *rollupMetrics

	mu      sync.Mutex
	touched rangeSet // from Touch, not yet taken by a pass
	wake    chan struct{}

	// Owned by the pass (one at a time, under passMu).
	passMu  sync.Mutex
	pending [3]rangeSet
	held    []int64 // invalidation rows taken, deleted once every rollup is done

	freshMu  sync.Mutex
	lastEnd  [3]time.Time
	lastRuns [3]bool
}

// NewRefresher returns a Refresher for the migrated database behind pool.
func NewRefresher(ctx context.Context, pool *pgxpool.Pool, cfg RefresherConfig) (*Refresher, error) {
	if cfg.Registerer == nil || cfg.Log == nil {
		return nil, errors.New("rollup refresher: Registerer and Log are required")
	}
	if cfg.Rollups.RefreshDelay <= 0 {
		return nil, fmt.Errorf("rollups.refresh_delay: must be positive; got %s", cfg.Rollups.RefreshDelay)
	}
	st, err := Status(ctx, pool)
	if err != nil {
		return nil, err
	}
	if len(st.Pending) > 0 {
		return nil, fmt.Errorf("%w: pending %v", ErrNotMigrated, st.Pending)
	}
	zone, err := DayTimezone(ctx, pool)
	if err != nil {
		return nil, err
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("rollup_settings.day_timezone %q: %w", zone, err)
	}
	if cfg.Rollups.DayTimezone != "" && cfg.Rollups.DayTimezone != zone {
		cfg.Log.Warn("rollups.day_timezone differs from the database's; days follow the database until ApplyPolicies runs",
			"configured", cfg.Rollups.DayTimezone, "database", zone)
	}
	met, err := newRollupMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Refresher{
		pool: pool, mode: st.Mode, zone: zone, b: bucketer{loc},
		delay: cfg.Rollups.RefreshDelay.Std(), retention: cfg.Rollups.RawRetention.Std(),
		poll: cfg.PollInterval, retEvery: cfg.RetentionInterval,
		log: cfg.Log, now: cfg.Now, met: met,
		touched: rangeSet{gap: time.Minute, limit: 4 * maxRanges},
		wake:    make(chan struct{}, 1),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.poll <= 0 {
		r.poll = time.Minute
	}
	if r.retEvery <= 0 {
		r.retEvery = 6 * time.Hour
	}
	for _, ru := range Rollups() {
		i := ru.index()
		r.pending[i] = rangeSet{gap: mergeGap[i], limit: maxRanges}
		if err := met.registerFreshness(cfg.Registerer, ru, func() float64 { return r.freshness(i) }); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Touch records that readings in [from, to) were stored; a pass refreshes
// them after the refresh delay. It never blocks; it is the Writer's OnStored
// hook.
func (r *Refresher) Touch(from, to time.Time) {
	if !from.Before(to) {
		return
	}
	r.mu.Lock()
	r.touched.add(timeRange{from.Truncate(time.Minute), to})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run refreshes until ctx is done, then makes a final pass (bounded by
// refresh_delay plus 30 seconds) and returns nil. A final pass that fails
// is logged, not returned: its ranges stay in rollup_invalidations for the
// next run. Run makes a first pass at once, to fold in what a previous run
// left there.
func (r *Refresher) Run(ctx context.Context) error {
	timer := time.NewTimer(0) // the first pass, at once
	armed := true
	poll := time.NewTicker(r.poll)
	defer poll.Stop()
	var retTick <-chan time.Time
	if r.mode == ModePostgres && r.retention > 0 {
		t := time.NewTicker(r.retEvery)
		defer t.Stop()
		retTick = t.C
	}
	backoff := r.delay
	var lastPass time.Duration // how long the latest pass took
	var lastEnd time.Time      // when it ended
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.delay+30*time.Second)
			defer cancel()
			if err := r.Pass(fctx); err != nil {
				r.log.Warn("final rollup refresh failed; rollup_invalidations keeps it for the next run", "err", err)
			}
			return nil
		case <-r.wake:
			if !armed {
				timer.Reset(passDelay(r.delay, lastPass, time.Since(lastEnd)))
				armed = true
			}
		case <-poll.C:
			if !armed {
				timer.Reset(0)
				armed = true
			}
		case <-retTick:
			if _, err := DropOldPartitions(ctx, r.pool, r.retention, r.log); err != nil {
				r.log.Error("raw retention failed; retrying at the next interval", "err", err)
			}
		case <-timer.C:
			armed = false
			t0 := time.Now()
			err := r.Pass(ctx)
			lastEnd = time.Now()
			lastPass = lastEnd.Sub(t0)
			switch {
			case err == nil:
				backoff = r.delay
			case ctx.Err() != nil:
				// Stopping: the final pass above takes over.
			default:
				r.log.Warn("rollup refresh failed; retrying", "err", err, "in", backoff)
				timer.Reset(backoff)
				armed = true
				backoff = min(2*backoff, max(time.Minute, r.delay))
			}
		}
	}
}

// restPerPass is how long the refresher rests after a pass, in multiples of
// the pass's duration, before a touch may start the next one: refreshing
// takes at most 1/(1+restPerPass) of the time. Passes no longer recompute
// the open buckets (they did, whole, on every pass, and under a heavy
// stream re-aggregated the same minute of readings over and over: LESSONS
// §11, a refresh cadence shorter than the refresh is a refresh storm), but
// a backlog of late readings or a catch-up after an outage can still make
// one long, and it must not compete with the sink's COPY for the database.
// Under load the rollups' freshness (the stackvps_rollups_freshness_seconds
// gauges) degrades gracefully instead.
const restPerPass = 3

// passDelay is how long to wait, after a touch, before the next pass: the
// refresh delay (which coalesces touches), or longer when the last pass,
// which took last and ended since ago, has not rested restPerPass times its
// duration yet.
func passDelay(delay, last, since time.Duration) time.Duration {
	return max(delay, restPerPass*last-since)
}

// errBusy says another process holds the refresh lock.
var errBusy = errors.New("another process is refreshing the rollups")

// Pass refreshes now everything touched so far: the ranges given to Touch
// and the rows of rollup_invalidations. It returns nil when every range was
// refreshed, or when another process holds the refresh lock and the rows
// are left to it (what was touched here is kept for the next pass).
func (r *Refresher) Pass(ctx context.Context) error {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting for a rollup refresh: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('stackvps.rollups.' || current_schema()))`).Scan(&locked); err != nil {
		return fmt.Errorf("taking the rollup refresh lock: %w", err)
	}
	if !locked {
		r.log.Debug("rollup refresh skipped", "reason", errBusy)
		return nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock(hashtext('stackvps.rollups.' || current_schema()))`); err != nil {
			_ = conn.Conn().Close(uctx) // closing releases the lock for sure
		}
	}()
	for {
		read, err := r.collect(ctx, conn.Conn())
		if err != nil {
			return err
		}
		// The buckets a pass refreshes end before limit: on plain
		// PostgreSQL the watermarks (the views aggregate live from them),
		// on TimescaleDB the buckets that closed settle ago (real-time
		// aggregation shows the open ones).
		var limit [3]time.Time
		if r.mode == ModePostgres {
			if limit, err = r.watermarks(ctx, conn.Conn()); err != nil {
				return err
			}
		} else {
			limit = r.cutoffs()
		}
		for _, ru := range Rollups() {
			if err := r.refreshRollup(ctx, conn.Conn(), ru, limit[ru.index()]); err != nil {
				return err
			}
		}
		if r.mode == ModePostgres {
			// What is pending from the watermarks on is live, and the
			// advance materializes it when it closes.
			for _, ru := range Rollups() {
				r.pending[ru.index()].remove(timeRange{limit[ru.index()], maxTime})
			}
			if err := r.advance(ctx, conn.Conn(), limit[Rollup1m.index()]); err != nil {
				return err
			}
		}
		if err := r.settleHeld(ctx, conn.Conn()); err != nil {
			return err
		}
		if read < maxInvalidationRows {
			return nil
		}
	}
}

// collect moves the touched ranges and the invalidation rows into the
// per-rollup pending sets, aligned to each rollup's buckets, and returns how
// many rows it read. It follows a change of the day zone (another process
// applied a new rollups.day_timezone).
func (r *Refresher) collect(ctx context.Context, conn *pgx.Conn) (int, error) {
	var zone string
	if err := conn.QueryRow(ctx, `SELECT day_timezone FROM rollup_settings`).Scan(&zone); err != nil {
		return 0, fmt.Errorf("reading rollup_settings: %w", err)
	}
	if zone != r.zone {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			return 0, fmt.Errorf("rollup_settings.day_timezone %q: %w", zone, err)
		}
		r.log.Info("readings_1d follows a new day zone", "from", r.zone, "to", zone)
		r.zone, r.b = zone, bucketer{loc}
		// Widen what is pending to whole days of the new zone.
		i := Rollup1d.index()
		old := r.pending[i].rs
		r.pending[i].rs = nil
		for _, x := range old {
			r.pending[i].add(timeRange{r.b.floor(Rollup1d, x.from), r.b.ceil(Rollup1d, x.to)})
		}
	}
	r.mu.Lock()
	touched := r.touched.rs
	r.touched.rs = nil
	r.mu.Unlock()
	for _, t := range touched {
		r.addPending("", t)
	}
	held := map[int64]bool{}
	for _, id := range r.held {
		held[id] = true
	}
	rows, err := conn.Query(ctx, `SELECT id, coalesce(rollup, ''), from_ts, to_ts FROM rollup_invalidations ORDER BY id LIMIT $1`, maxInvalidationRows)
	if err != nil {
		return 0, fmt.Errorf("reading rollup invalidations: %w", err)
	}
	var id int64
	var ru string
	var from, to time.Time
	read := 0
	_, err = pgx.ForEachRow(rows, []any{&id, &ru, &from, &to}, func() error {
		read++
		if !held[id] {
			held[id] = true
			r.held = append(r.held, id)
			r.addPending(Rollup(ru), timeRange{from, to})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading rollup invalidations: %w", err)
	}
	for _, ru := range Rollups() {
		r.met.pending.WithLabelValues(string(ru)).Set(float64(r.pending[ru.index()].len()))
	}
	return read, nil
}

// addPending adds t, aligned outwards to bucket boundaries, to rollup ru's
// pending set, or to every rollup's when ru is empty. On plain PostgreSQL it
// always adds t to every rollup's: there the rollups are computed from each
// other (see Refresher), and the pass refreshes them in order.
func (r *Refresher) addPending(ru Rollup, t timeRange) {
	if r.mode == ModePostgres {
		ru = ""
	}
	for _, x := range Rollups() {
		if ru != "" && ru != x {
			continue
		}
		r.pending[x.index()].add(timeRange{r.b.floor(x, t.from), r.b.ceil(x, t.to)})
	}
}

// horizon returns the first bucket start of ru whose raw readings are all
// still kept, or the zero time when raw retention is off.
func (r *Refresher) horizon(ru Rollup) time.Time {
	if r.retention <= 0 {
		return time.Time{}
	}
	return r.b.ceil(ru, r.now().Add(-r.retention))
}

// refreshRollup refreshes every pending range of ru before limit (a bucket
// boundary of ru), piece by piece, and removes each piece from the pending
// set once it is done; what is pending from limit on stays.
func (r *Refresher) refreshRollup(ctx context.Context, conn *pgx.Conn, ru Rollup, limit time.Time) error {
	i := ru.index()
	set := &r.pending[i]
	defer func() { r.met.pending.WithLabelValues(string(ru)).Set(float64(set.len())) }()
	if h := r.horizon(ru); !h.IsZero() {
		for _, x := range set.rs {
			if x.from.Before(h) {
				r.met.skipped.WithLabelValues(string(ru)).Inc()
				r.log.Warn("late readings before the raw retention horizon are not folded into the rollup: their raw neighbours are gone",
					"rollup", ru.Table(), "from", x.from, "to", x.to, "horizon", h)
			}
		}
		set.remove(timeRange{time.Time{}, h})
	}
	for set.len() > 0 && set.rs[0].from.Before(limit) {
		piece := set.rs[0]
		if piece.to.Sub(piece.from) > maxPiece[i] {
			piece.to = r.b.ceil(ru, piece.from.Add(maxPiece[i]))
		}
		if piece.to.After(limit) {
			piece.to = limit
		}
		if err := r.refresh(ctx, conn, ru, piece); err != nil {
			return err
		}
		set.remove(piece)
	}
	return nil
}

// maxTime is after every reading's time.
var maxTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// cutoffs returns, per rollup, the start of its first bucket that had not
// closed settle ago: the minute, the hour of that minute, and the last local
// midnight at or before that hour (where midnight happens twice the day's
// bucket starts at the second, after the first 00:xx; the day before is
// taken then).
func (r *Refresher) cutoffs() [3]time.Time {
	m := r.now().Add(-r.settle()).Truncate(time.Minute)
	h := m.Truncate(time.Hour)
	d := r.b.floor(Rollup1d, h)
	for d.After(h) {
		d = r.b.floor(Rollup1d, d.Add(-3*time.Hour))
	}
	return [3]time.Time{m.UTC(), h.UTC(), d.UTC()}
}

// settleHeld deletes the invalidation rows the pass took, once their ranges
// are refreshed. On TimescaleDB the ranges still pending (open buckets,
// refreshed once they close) are written back first, one row per range and
// rollup, in the same transaction, so a crash loses none and the table
// stays small however long a day stays open; they are read back by the
// next pass.
func (r *Refresher) settleHeld(ctx context.Context, conn *pgx.Conn) error {
	deferred := r.mode == ModeTimescale && (r.pending[0].len() > 0 || r.pending[1].len() > 0 || r.pending[2].len() > 0)
	if len(r.held) == 0 && !deferred {
		return nil
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if deferred {
			for _, ru := range Rollups() {
				for _, x := range r.pending[ru.index()].rs {
					if _, err := tx.Exec(ctx, `INSERT INTO rollup_invalidations (rollup, from_ts, to_ts) VALUES ($1, $2, $3)`,
						string(ru), x.from, x.to); err != nil {
						return fmt.Errorf("writing back pending rollup ranges: %w", err)
					}
				}
			}
		}
		if len(r.held) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM rollup_invalidations WHERE id = ANY($1)`, r.held); err != nil {
				return fmt.Errorf("deleting refreshed rollup invalidations: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.held = nil
	if deferred {
		// Still pending, in rollup_invalidations now: the gauges keep
		// counting them.
		for _, ru := range Rollups() {
			r.pending[ru.index()].rs = nil
		}
	}
	return nil
}

// settle is how long after a minute ends the refresher waits before it
// materializes it (plain PostgreSQL): readings of that minute still in the
// pipeline then mostly arrive before, not as late readings that cost a
// second refresh of the minute.
func (r *Refresher) settle() time.Duration { return max(r.delay, 5*time.Second) }

// watermarks reads the rollups' watermarks (plain PostgreSQL).
func (r *Refresher) watermarks(ctx context.Context, conn *pgx.Conn) ([3]time.Time, error) {
	var wm [3]time.Time
	rows, err := conn.Query(ctx, `SELECT rollup, watermark FROM rollup_watermarks`)
	if err != nil {
		return wm, fmt.Errorf("reading rollup watermarks: %w", err)
	}
	var ru string
	var t time.Time
	if _, err := pgx.ForEachRow(rows, []any{&ru, &t}, func() error {
		wm[Rollup(ru).index()] = t
		return nil
	}); err != nil {
		return wm, fmt.Errorf("reading rollup watermarks: %w", err)
	}
	for _, ru := range Rollups() {
		if wm[ru.index()].IsZero() {
			return wm, fmt.Errorf("rollup_watermarks has no row for %s", ru)
		}
	}
	return wm, nil
}

// advance moves the watermarks (plain PostgreSQL) up to the 1m cutoff, the
// last minute that ended settle ago (the database derives the 1h and 1d
// watermarks from it as cutoffs does), materializing the buckets that
// closed since the last pass (stackvps_advance_rollups), in pieces of at
// most a day of minutes so that catching up after an outage is done in
// bounded transactions. from is the 1m watermark read at the start of the
// pass.
func (r *Refresher) advance(ctx context.Context, conn *pgx.Conn, from time.Time) error {
	target := r.cutoffs()[Rollup1m.index()]
	for from.Before(target) {
		upto := target
		if upto.Sub(from) > maxPiece[0] {
			upto = from.Add(maxPiece[0])
		}
		start := r.now()
		t0 := time.Now()
		rows, err := conn.Query(ctx, `SELECT rollup, watermark, rows_changed FROM stackvps_advance_rollups($1)`, upto)
		if err != nil {
			r.met.errors.WithLabelValues(string(Rollup1m)).Inc()
			return fmt.Errorf("advancing the rollup watermarks to %s: %w", upto.Format(time.RFC3339), err)
		}
		var ru string
		var wm time.Time
		var changed int64
		_, err = pgx.ForEachRow(rows, []any{&ru, &wm, &changed}, func() error {
			r.met.changed.WithLabelValues(ru).Add(float64(changed))
			r.markFresh(Rollup(ru), wm, start)
			if Rollup(ru) == Rollup1m {
				from = wm
			}
			return nil
		})
		if err != nil {
			r.met.errors.WithLabelValues(string(Rollup1m)).Inc()
			return fmt.Errorf("advancing the rollup watermarks to %s: %w", upto.Format(time.RFC3339), err)
		}
		r.met.advances.Inc()
		r.met.advanceSeconds.Observe(time.Since(t0).Seconds())
		r.log.Debug("rollup watermarks advanced", "to", upto, "duration_ms", time.Since(t0).Milliseconds())
		if from.Before(upto.Truncate(time.Minute)) {
			return fmt.Errorf("advancing the rollup watermarks to %s: the 1m watermark stayed at %s", upto.Format(time.RFC3339), from.Format(time.RFC3339))
		}
	}
	return nil
}

// markFresh records that ru is fresh up to end (capped at start, the time
// the refresh began).
func (r *Refresher) markFresh(ru Rollup, end, start time.Time) {
	if end.After(start) {
		end = start
	}
	r.freshMu.Lock()
	if !r.lastRuns[ru.index()] || end.After(r.lastEnd[ru.index()]) {
		r.lastEnd[ru.index()] = end
		r.lastRuns[ru.index()] = true
	}
	r.freshMu.Unlock()
}

// refresh recomputes the buckets of ru in the aligned range x.
func (r *Refresher) refresh(ctx context.Context, conn *pgx.Conn, ru Rollup, x timeRange) error {
	start := r.now()
	t0 := time.Now()
	var err error
	var changed int64
	if r.mode == ModeTimescale {
		_, err = conn.Exec(ctx, `CALL refresh_continuous_aggregate($1::regclass, $2::timestamptz, $3::timestamptz)`, ru.Table(), x.from, x.to)
	} else {
		err = conn.QueryRow(ctx, `SELECT stackvps_refresh_rollup($1, $2, $3)`, string(ru), x.from, x.to).Scan(&changed)
	}
	if err != nil {
		r.met.errors.WithLabelValues(string(ru)).Inc()
		return fmt.Errorf("refreshing %s over [%s, %s): %w", ru.Table(), x.from.Format(time.RFC3339), x.to.Format(time.RFC3339), err)
	}
	r.met.seconds.WithLabelValues(string(ru)).Observe(time.Since(t0).Seconds())
	r.met.refreshes.WithLabelValues(string(ru)).Inc()
	r.met.changed.WithLabelValues(string(ru)).Add(float64(changed))
	r.markFresh(ru, x.to, start)
	r.log.Debug("rollup refreshed", "rollup", ru.Table(), "from", x.from, "to", x.to, "rows_changed", changed,
		"duration_ms", time.Since(t0).Milliseconds())
	return nil
}

// freshness is now minus the end of the latest range refreshed (capped at
// the time of that refresh), or NaN before the first refresh.
func (r *Refresher) freshness(i int) float64 {
	r.freshMu.Lock()
	defer r.freshMu.Unlock()
	if !r.lastRuns[i] {
		return math.NaN()
	}
	return max(0, r.now().Sub(r.lastEnd[i]).Seconds())
}

type rollupMetrics struct {
	seconds                             *prometheus.HistogramVec
	refreshes, errors, skipped, changed *prometheus.CounterVec
	pending                             *prometheus.GaugeVec
	advances                            prometheus.Counter
	advanceSeconds                      prometheus.Histogram
}

func newRollupMetrics(reg prometheus.Registerer) (*rollupMetrics, error) {
	const ns, sub = "stackvps", "rollups"
	l := []string{"rollup"}
	m := &rollupMetrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "refresh_seconds", Help: "Time to refresh one range of a rollup.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}, l),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "refreshes_total", Help: "Ranges of a rollup refreshed."}, l),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "refresh_errors_total", Help: "Rollup refreshes that failed (retried)."}, l),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "skipped_total", Help: "Touched ranges clipped because they reach before the raw retention horizon."}, l),
		changed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rows_changed_total", Help: "Rollup rows inserted, updated or deleted by refreshes (plain PostgreSQL only)."}, l),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "pending_ranges", Help: "Ranges of a rollup waiting to be refreshed."}, l),
		advances: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "advances_total", Help: "Moves of the rollup watermarks that materialized closed buckets (plain PostgreSQL only)."}),
		advanceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "advance_seconds", Help: "Time to move the rollup watermarks, materializing the buckets that closed (plain PostgreSQL only).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
	}
	for _, c := range []prometheus.Collector{m.seconds, m.refreshes, m.errors, m.skipped, m.changed, m.pending, m.advances, m.advanceSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering rollup metrics: %w", err)
		}
	}
	return m, nil
}

func (m *rollupMetrics) registerFreshness(reg prometheus.Registerer, ru Rollup, f func() float64) error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "stackvps", Subsystem: "rollups",
		Name: "freshness_seconds", ConstLabels: prometheus.Labels{"rollup": string(ru)},
		Help: "Now minus the end of the latest range refreshed into the rollup (capped at the time of that refresh); on plain PostgreSQL the end of the materialized part (the watermark), past which the rollup aggregates live. NaN before the first refresh."}, f)
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("registering rollup metrics: %w", err)
	}
	return nil
}

// DayTimezone returns the zone readings_1d buckets days in, as recorded in
// the database.
func DayTimezone(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var zone string
	if err := pool.QueryRow(ctx, `SELECT day_timezone FROM rollup_settings`).Scan(&zone); err != nil {
		return "", fmt.Errorf("reading rollup_settings: %w", err)
	}
	return zone, nil
}

// ErrZoneChangeUnsafe is returned by SetDayTimezone when readings_1d cannot
// be rebuilt in another zone because raw readings under some of its days
// are gone (dropped by retention, or deleted).
var ErrZoneChangeUnsafe = errors.New("readings_1d cannot be rebuilt in another zone")

// SetDayTimezone makes readings_1d bucket days in zone. When the database's
// zone differs, readings_1d is rebuilt: on plain PostgreSQL the table is
// recomputed at once, in one transaction, from readings_1h (from
// readings_1m when the new zone's days do not start on whole UTC hours, as
// in Asia/Kolkata), so it is exactly as fresh as those are: ranges still
// waiting in rollup_invalidations are refreshed by the next pass in 1m, 1h
// and then 1d, days of the new zone included; on TimescaleDB the
// continuous aggregate is recreated in the new zone (real-time aggregation
// shows correct days at once) and its materialization is queued in
// rollup_invalidations for the refresher. The change is refused
// (ErrZoneChangeUnsafe) when a day of readings_1d has lost raw readings,
// since rebuilding it would change or erase it. Safe to call concurrently:
// the rollup_settings row is locked while it works.
func SetDayTimezone(ctx context.Context, pool *pgxpool.Pool, zone string, log *slog.Logger) (changed bool, err error) {
	if _, err := time.LoadLocation(zone); err != nil || zone == "" {
		return false, fmt.Errorf("rollups.day_timezone: must be an IANA time zone such as America/Santiago; got %q", zone)
	}
	st, err := Status(ctx, pool)
	if err != nil {
		return false, err
	}
	if len(st.Pending) > 0 {
		return false, fmt.Errorf("%w: pending %v", ErrNotMigrated, st.Pending)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var old string
		if err := tx.QueryRow(ctx, `SELECT day_timezone FROM rollup_settings FOR UPDATE`).Scan(&old); err != nil {
			return fmt.Errorf("reading rollup_settings: %w", err)
		}
		if old == zone {
			return nil
		}
		// A day starting before the first raw reading that counts more
		// readings than the raw table still holds lost raw data (retention
		// dropped it, or it was deleted): refuse. A day counting fewer only
		// has writes not refreshed yet; the rebuild leaves them to the
		// refresher, which has their ranges in rollup_invalidations.
		var lost int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM readings_1d d
			WHERE d.bucket < coalesce((SELECT min(time) FROM readings), 'infinity')
			  AND d.count > (SELECT count(*) FROM readings r WHERE r.point = d.point AND r.variable = d.variable
			                  AND r.time >= d.bucket
			                  AND r.time < (date_trunc('day', d.bucket AT TIME ZONE $1) + interval '1 day') AT TIME ZONE $1)`,
			old).Scan(&lost)
		if err != nil {
			return fmt.Errorf("checking readings_1d before a zone change: %w", err)
		}
		if lost > 0 {
			return fmt.Errorf("rollups.day_timezone: %w from %s to %s: %d day(s) of readings_1d count more readings than the raw table still holds (dropped by rollups.raw_retention, or deleted); keep %s",
				ErrZoneChangeUnsafe, old, zone, lost, old)
		}
		if st.Mode == ModeTimescale {
			if err := recreateDayCagg(ctx, tx, zone); err != nil {
				return err
			}
		} else {
			if _, err := tx.Exec(ctx, `UPDATE rollup_settings SET day_timezone = $1, updated_at = now()`, zone); err != nil {
				return fmt.Errorf("writing rollup_settings: %w", err)
			}
			// The watermark rows are locked first, so a refresher's
			// advance (which locks them too) runs wholly before or after.
			if _, err := tx.Exec(ctx, `SELECT 1 FROM rollup_watermarks FOR UPDATE`); err != nil {
				return fmt.Errorf("locking rollup_watermarks: %w", err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM readings_1d_materialized`); err != nil {
				return fmt.Errorf("emptying readings_1d_materialized: %w", err)
			}
			// The 1d watermark moves to the new zone's last midnight at or
			// before the 1h watermark; the view aggregates live after it.
			if _, err := tx.Exec(ctx, `UPDATE rollup_watermarks
				SET watermark = stackvps_rollup_day_floor((SELECT watermark FROM rollup_watermarks WHERE rollup = '1h'), $1), updated_at = now()
				WHERE rollup = '1d'`, zone); err != nil {
				return fmt.Errorf("moving the readings_1d watermark: %w", err)
			}
			// From readings_1h or readings_1m (migrations 0010 and 0011),
			// over the days of the raw readings before the watermark: the
			// check above refuses the change when readings_1d has days
			// before them.
			if _, err := tx.Exec(ctx, `SELECT stackvps_refresh_rollup('1d', min(time), stackvps_rollup_watermark('1d')) FROM readings`); err != nil {
				return fmt.Errorf("rebuilding readings_1d in %s: %w", zone, err)
			}
		}
		log.Warn("rollups.day_timezone changed: readings_1d rebuilt", "from", old, "to", zone, "mode", st.Mode)
		changed = true
		return nil
	})
	return changed, err
}

// recreateDayCagg replaces the readings_1d continuous aggregate by one in
// zone, inside tx (WITH NO DATA may run in a transaction), and queues its
// materialization.
func recreateDayCagg(ctx context.Context, tx pgx.Tx, zone string) error {
	stmts := []string{
		`DROP MATERIALIZED VIEW IF EXISTS readings_1d`,
		fmt.Sprintf(`CREATE MATERIALIZED VIEW readings_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT public.time_bucket(INTERVAL '1 day', time, %s) AS bucket, point, variable,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       public.last(value, time) AS last, count(*) AS count
FROM readings
GROUP BY 1, point, variable
WITH NO DATA`, quoteLiteral(zone)),
		`CREATE INDEX IF NOT EXISTS readings_1d_point_idx ON readings_1d (point, variable, bucket DESC)`,
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("recreating readings_1d in %s: %w", zone, err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE rollup_settings SET day_timezone = $1, updated_at = now()`, zone); err != nil {
		return fmt.Errorf("writing rollup_settings: %w", err)
	}
	_, err := tx.Exec(ctx, `INSERT INTO rollup_invalidations (rollup, from_ts, to_ts)
		SELECT '1d', min(time), max(time) + interval '1 microsecond' FROM readings HAVING count(*) > 0`)
	if err != nil {
		return fmt.Errorf("queueing the readings_1d rebuild: %w", err)
	}
	return nil
}

func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// A refresh policy, the TimescaleDB safety net behind the refresher.
type refreshPolicy struct {
	rollup                      Rollup
	startOffset, endOffset      time.Duration
	schedule, initialStartAfter time.Duration
}

// refreshPolicies are the safety-net policies: each looks back startOffset,
// and they start minutes apart (initialStartAfter) on fixed schedules so the
// three never begin together (timescaledb#3477): 1m at :00, :10, :20...
// after the first start, 1h at :04, 1d at :07 (plus the first start). Raw retention must exceed
// the largest startOffset by a day (MinRawRetention).
var refreshPolicies = []refreshPolicy{
	{Rollup1m, 24 * time.Hour, time.Minute, 10 * time.Minute, 10 * time.Minute},
	{Rollup1h, 7 * 24 * time.Hour, time.Hour, time.Hour, 14 * time.Minute},
	{Rollup1d, 28 * 24 * time.Hour, time.Hour, 6 * time.Hour, 17 * time.Minute},
}

// MinRawRetention is the shortest rollups.raw_retention ApplyPolicies
// accepts: the longest look-back of a refresh policy plus a day, so a
// refresh never reaches raw readings retention has dropped (which would
// erase rollup buckets, timescaledb#2198).
func MinRawRetention() time.Duration {
	var m time.Duration
	for _, p := range refreshPolicies {
		m = max(m, p.startOffset)
	}
	return m + 24*time.Hour
}

// ErrUnsafeRetention is returned by ApplyPolicies when rollups.raw_retention
// would drop raw readings a rollup refresh still reads.
var ErrUnsafeRetention = errors.New("raw retention would cut into what the rollups still refresh")

// ApplyPolicies makes the database follow the rollups section, idempotently:
//   - the day zone (SetDayTimezone);
//   - on TimescaleDB, the refresh policies (a safety net: the refresher does
//     the real work; their look-back is fixed, see MinRawRetention), the
//     compression of raw chunks older than compress_after (segmented by
//     point and variable; 0 removes the policy, compressed chunks stay), and
//     the retention of raw chunks older than raw_retention (0 removes it);
//   - on plain PostgreSQL, compression is not available (a no-op, logged),
//     and raw retention drops every monthly partition of readings that ends
//     before now - raw_retention (DropOldPartitions).
//
// It refuses (ErrUnsafeRetention) a raw_retention shorter than
// MinRawRetention or than the look-back of any refresh policy found on the
// rollups, and a compress_after not below raw_retention.
func ApplyPolicies(ctx context.Context, pool *pgxpool.Pool, cfg config.Rollups, log *slog.Logger) error {
	if cfg.RawRetention > 0 && cfg.RawRetention.Std() < MinRawRetention() {
		return fmt.Errorf("rollups.raw_retention: %w: %s is shorter than the rollups' longest refresh window plus a day (%s)",
			ErrUnsafeRetention, cfg.RawRetention, MinRawRetention())
	}
	if cfg.RawRetention > 0 && cfg.CompressAfter >= cfg.RawRetention {
		return fmt.Errorf("rollups.compress_after: must be below rollups.raw_retention (%s); got %s", cfg.RawRetention, cfg.CompressAfter)
	}
	if _, err := SetDayTimezone(ctx, pool, cfg.DayTimezone, log); err != nil {
		return err
	}
	st, err := Status(ctx, pool)
	if err != nil {
		return err
	}
	if st.Mode != ModeTimescale {
		if cfg.CompressAfter > 0 {
			log.Info("rollups.compress_after ignored: compression needs TimescaleDB", "compress_after", cfg.CompressAfter)
		}
		if cfg.RawRetention > 0 {
			if _, err := DropOldPartitions(ctx, pool, cfg.RawRetention.Std(), log); err != nil {
				return err
			}
		}
		return nil
	}
	return applyTimescalePolicies(ctx, pool, cfg, log)
}

func applyTimescalePolicies(ctx context.Context, pool *pgxpool.Pool, cfg config.Rollups, log *slog.Logger) error {
	for _, p := range refreshPolicies {
		// A policy already there is kept as it is, even tuned by hand; the
		// retention check below reads it.
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM timescaledb_information.jobs
			WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_schema = current_schema()
			  AND hypertable_name = $1)`, p.rollup.Table()).Scan(&exists); err != nil {
			return fmt.Errorf("reading the refresh policy of %s: %w", p.rollup.Table(), err)
		}
		if exists {
			continue
		}
		_, err := pool.Exec(ctx, `SELECT public.add_continuous_aggregate_policy($1::regclass,
			start_offset => $2::interval, end_offset => $3::interval, schedule_interval => $4::interval,
			if_not_exists => true, initial_start => now() + $5::interval)`,
			p.rollup.Table(), pgInterval(p.startOffset), pgInterval(p.endOffset), pgInterval(p.schedule), pgInterval(p.initialStartAfter))
		if err != nil {
			return fmt.Errorf("adding the refresh policy of %s: %w", p.rollup.Table(), err)
		}
	}
	if cfg.RawRetention > 0 {
		// Policies changed by hand count too.
		var longest time.Duration
		// The jobs view names a continuous aggregate's job by the view.
		err := pool.QueryRow(ctx, `SELECT coalesce(max((config->>'start_offset')::interval), '0')
			FROM timescaledb_information.jobs
			WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_schema = current_schema()
			  AND hypertable_name IN ('readings_1m', 'readings_1h', 'readings_1d')`).Scan(&longest)
		if err != nil {
			return fmt.Errorf("reading the rollups' refresh policies: %w", err)
		}
		if cfg.RawRetention.Std() <= longest+24*time.Hour {
			return fmt.Errorf("rollups.raw_retention: %w: %s does not exceed a refresh policy's look-back %s plus a day",
				ErrUnsafeRetention, cfg.RawRetention, longest)
		}
	}
	var compressed bool
	if err := pool.QueryRow(ctx, `SELECT coalesce((SELECT compression_enabled FROM timescaledb_information.hypertables
		WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'), false)`).Scan(&compressed); err != nil {
		return fmt.Errorf("reading the compression settings of readings: %w", err)
	}
	if cfg.CompressAfter > 0 {
		if !compressed {
			if _, err := pool.Exec(ctx, `ALTER TABLE readings SET (timescaledb.compress,
				timescaledb.compress_segmentby = 'point, variable', timescaledb.compress_orderby = 'time DESC')`); err != nil {
				return fmt.Errorf("enabling compression on readings: %w", err)
			}
		}
		if err := replacePolicy(ctx, pool, "policy_compression", "compress_after", cfg.CompressAfter.Std(),
			`SELECT public.remove_compression_policy('readings', if_exists => true)`,
			`SELECT public.add_compression_policy('readings', compress_after => $1::interval)`); err != nil {
			return err
		}
		log.Info("compression policy set", "compress_after", cfg.CompressAfter)
	} else if _, err := pool.Exec(ctx, `SELECT public.remove_compression_policy('readings', if_exists => true)`); err != nil {
		return fmt.Errorf("removing the compression policy: %w", err)
	}
	if cfg.RawRetention > 0 {
		if err := replacePolicy(ctx, pool, "policy_retention", "drop_after", cfg.RawRetention.Std(),
			`SELECT public.remove_retention_policy('readings', if_exists => true)`,
			`SELECT public.add_retention_policy('readings', drop_after => $1::interval)`); err != nil {
			return err
		}
		log.Info("raw retention policy set", "raw_retention", cfg.RawRetention)
	} else if _, err := pool.Exec(ctx, `SELECT public.remove_retention_policy('readings', if_exists => true)`); err != nil {
		return fmt.Errorf("removing the retention policy: %w", err)
	}
	return nil
}

// replacePolicy makes readings' policy proc have key = want: it does
// nothing when it already has, and otherwise removes it and adds it anew.
func replacePolicy(ctx context.Context, pool *pgxpool.Pool, proc, key string, want time.Duration, remove, add string) error {
	var same bool
	err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM timescaledb_information.jobs
		WHERE proc_name = $1 AND hypertable_schema = current_schema() AND hypertable_name = 'readings'
		  AND (config->>$2)::interval = $3::interval)`, proc, key, pgInterval(want)).Scan(&same)
	if err != nil {
		return fmt.Errorf("reading the %s policy of readings: %w", proc, err)
	}
	if same {
		return nil
	}
	if _, err := pool.Exec(ctx, remove); err != nil {
		return fmt.Errorf("removing the %s policy of readings: %w", proc, err)
	}
	if _, err := pool.Exec(ctx, add, pgInterval(want)); err != nil {
		return fmt.Errorf("adding the %s policy of readings: %w", proc, err)
	}
	return nil
}

// pgInterval spells d as PostgreSQL reads an interval, in the largest
// whole unit, so job configurations read "60 days" rather than "1440:00:00".
func pgInterval(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "days"}, {time.Hour, "hours"}, {time.Minute, "minutes"}, {time.Second, "seconds"}} {
		if d%u.d == 0 {
			return fmt.Sprintf("%d %s", d/u.d, u.name)
		}
	}
	return fmt.Sprintf("%d microseconds", d/time.Microsecond)
}

var partitionName = regexp.MustCompile(`^readings_p(\d{4})(\d{2})$`)

// DropOldPartitions applies raw retention on plain PostgreSQL: it drops
// every monthly partition of readings (readings_pYYYYMM, UTC months) that
// ends at or before now - retention, and returns their names. Only whole
// partitions go: a month that still holds readings younger than the cutoff
// is kept entire, and the default partition is never touched. Before a
// partition goes, rollup_settings.raw_dropped_before is moved to its end in
// the same transaction, so no rollup refresh ever recomputes a bucket from
// the readings left (which would erase it). It refuses (ErrUnsafeRetention)
// a retention shorter than MinRawRetention. It is a no-op on TimescaleDB,
// whose retention policy does this.
func DropOldPartitions(ctx context.Context, pool *pgxpool.Pool, retention time.Duration, log *slog.Logger) ([]string, error) {
	if retention <= 0 {
		return nil, nil
	}
	if retention < MinRawRetention() {
		return nil, fmt.Errorf("rollups.raw_retention: %w: %s is shorter than %s", ErrUnsafeRetention, retention, MinRawRetention())
	}
	st, err := Status(ctx, pool)
	if err != nil {
		return nil, err
	}
	if st.Mode != ModePostgres {
		return nil, nil
	}
	rows, err := pool.Query(ctx, `SELECT c.relname, now() FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'readings'::regclass`)
	if err != nil {
		return nil, fmt.Errorf("listing readings partitions: %w", err)
	}
	type part struct {
		name string
		end  time.Time
	}
	var parts []part
	var name string
	var now time.Time
	if _, err := pgx.ForEachRow(rows, []any{&name, &now}, func() error {
		m := partitionName.FindStringSubmatch(name)
		if m == nil {
			return nil
		}
		var y, mo int
		if _, err := fmt.Sscanf(m[1]+" "+m[2], "%d %d", &y, &mo); err != nil {
			return nil
		}
		parts = append(parts, part{name, time.Date(y, time.Month(mo)+1, 1, 0, 0, 0, 0, time.UTC)})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing readings partitions: %w", err)
	}
	cutoff := now.Add(-retention)
	var dropped []string
	for _, p := range parts {
		if p.end.After(cutoff) {
			continue
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE rollup_settings SET raw_dropped_before = greatest(coalesce(raw_dropped_before, '-infinity'), $1), updated_at = now()`, p.end); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{p.name}.Sanitize())
			return err
		})
		if err != nil {
			return dropped, fmt.Errorf("dropping readings partition %s: %w", p.name, err)
		}
		log.Info("raw retention: readings partition dropped", "partition", p.name, "ended", p.end, "retention", retention)
		dropped = append(dropped, p.name)
	}
	sort.Strings(dropped)
	return dropped, nil
}

package timescale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/pipeline"
)

// Row is one reading as the readings table stores it.
type Row struct {
	Time     time.Time
	Point    string
	Variable string
	Value    float64
	Quality  int32
	Device   string
	RawValue *float64
	RawUnit  *string
}

// RowDecoder turns a telemetry.readings record value into a Row. An error
// means the record can never be stored and is dead-lettered, unless it is
// marked pipeline.Transient (a schema registry that cannot be reached):
// then the batch is retried.
type RowDecoder func(value []byte) (Row, error)

var readingColumns = []string{"time", "point", "variable", "value", "quality", "device", "raw_value", "raw_unit"}

// Writer is the pipeline.BatchWriter of the TimescaleDB sink: it stores
// readings with binary COPY and the consumed offsets in sink_offsets, in one
// transaction.
//
// The common path is a plain COPY into readings, as fast as the database
// allows. When a batch meets rows that are already stored (a replay, a
// redelivery, a batch retried after an ambiguous commit) the unique key
// refuses it and the batch is merged instead: COPY into a temporary table,
// then INSERT ... ON CONFLICT DO NOTHING, so the row stored first stays and
// nothing is duplicated. A row the database refuses for its content (a
// data exception or constraint violation) is isolated by bisecting the batch
// and dead-lettered; the rest is stored.
//
// With each batch that stored rows the writer also records, in the same
// transaction, the event-time ranges of those rows in rollup_invalidations,
// so the rollups are refreshed even after a crash; after the commit it calls
// the OnStored hook with the same ranges.
type Writer struct {
	pool   *pgxpool.Pool
	decode RowDecoder
	mode   Mode
	log    *slog.Logger
	met    *writerMetrics
	// months holds the months (plain PostgreSQL) whose partitions exist.
	months sync.Map
	// onStored is called after each commit that stored rows.
	onStored func(from, to time.Time)
}

// OnStored sets f to be called after each committed batch that stored new
// rows, once for each range [from, to) of their event times (rows closer
// than an hour share a range; at most 32 ranges a batch). The rows merged
// away as duplicates are not counted. f is called on the writer's goroutine
// and must return quickly (the rollup Refresher's Touch does). Call OnStored
// before the first Write; it is not safe to call concurrently with Write.
func (w *Writer) OnStored(f func(from, to time.Time)) { w.onStored = f }

// Touched event times are kept as a few ranges: times closer than
// touchGap share a range, and a batch records at most maxTouched ranges (the
// closest merge), so a batch that mixes a device's backlog from last month
// with current readings does not make the rollups refresh the month between.
const (
	touchGap   = time.Hour
	maxTouched = 32
)

func newTouched() rangeSet { return rangeSet{gap: touchGap, limit: maxTouched} }

// addTime adds the range that surely holds t once stored: the database keeps
// microseconds and rounds to them.
func addTime(s *rangeSet, t time.Time) {
	t = t.Truncate(time.Microsecond)
	s.add(timeRange{t.Add(-time.Microsecond), t.Add(2 * time.Microsecond)})
}

// NewWriter checks that the database is migrated and registers the writer's
// metrics on reg.
func NewWriter(ctx context.Context, pool *pgxpool.Pool, decode RowDecoder, reg prometheus.Registerer, log *slog.Logger) (*Writer, error) {
	st, err := Status(ctx, pool)
	if err != nil {
		return nil, err
	}
	if len(st.Pending) > 0 {
		return nil, fmt.Errorf("%w: pending %v", ErrNotMigrated, st.Pending)
	}
	met, err := newWriterMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Writer{pool: pool, decode: decode, mode: st.Mode, log: log, met: met}, nil
}

// Offsets implements pipeline.BatchWriter.
func (w *Writer) Offsets(ctx context.Context, group, topic string, partitions []int32) (map[int32]int64, error) {
	rows, err := w.pool.Query(ctx, `SELECT partition, next_offset FROM sink_offsets
		WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3)`, group, topic, partitions)
	if err != nil {
		return nil, classify("reading sink_offsets", err)
	}
	out := map[int32]int64{}
	var p int32
	var o int64
	_, err = pgx.ForEachRow(rows, []any{&p, &o}, func() error { out[p] = o; return nil })
	if err != nil {
		return nil, classify("reading sink_offsets", err)
	}
	return out, nil
}

// Write implements pipeline.BatchWriter.
func (w *Writer) Write(ctx context.Context, group string, recs []pipeline.Record, next map[string]map[int32]int64, dead pipeline.DeadLetterFunc) error {
	start := time.Now()
	rows := make([]Row, 0, len(recs))
	src := make([]pipeline.Record, 0, len(recs))
	type key struct {
		point, variable string
		t               time.Time
	}
	seen := make(map[key]struct{}, len(recs))
	var dups int
	for _, rec := range recs {
		row, err := w.decode(rec.Value)
		if pipeline.IsTransient(err) {
			return err
		}
		if err != nil {
			if derr := dead(ctx, rec, pipeline.Permanent("bad_record", err)); derr != nil {
				return derr
			}
			continue
		}
		k := key{row.Point, row.Variable, row.Time.UTC()}
		if _, dup := seen[k]; dup {
			// Postgres cannot touch one row twice in a statement; the
			// first copy of a reading wins, as it does against the table.
			dups++
			continue
		}
		seen[k] = struct{}{}
		rows = append(rows, row)
		src = append(src, rec)
	}
	if err := w.ensurePartitions(ctx, rows); err != nil {
		return err
	}
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return classify("beginning a transaction", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	inserted, stored, err := w.store(ctx, tx, rows, src, dead)
	if err != nil {
		return err
	}
	if inserted > 0 && stored.len() > 0 {
		froms := make([]time.Time, 0, stored.len())
		tos := make([]time.Time, 0, stored.len())
		for _, r := range stored.rs {
			froms, tos = append(froms, r.from), append(tos, r.to)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO rollup_invalidations (from_ts, to_ts)
			SELECT * FROM unnest($1::timestamptz[], $2::timestamptz[])`, froms, tos); err != nil {
			return classify("recording the rollup invalidations", err)
		}
	}
	if err := storeOffsets(ctx, tx, group, next); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		// The commit may or may not have happened; retrying is safe because
		// the retry's rows merge into what is stored.
		return pipeline.Transient(fmt.Errorf("committing %d readings: %w", len(rows), err))
	}
	w.met.rows.Add(float64(inserted))
	w.met.duplicates.Add(float64(dups + len(rows) - inserted))
	w.met.write.Observe(time.Since(start).Seconds())
	if inserted > 0 && w.onStored != nil {
		for _, r := range stored.rs {
			w.onStored(r.from, r.to)
		}
	}
	return nil
}

// store writes rows inside tx and returns how many were new and the ranges
// of their event times.
func (w *Writer) store(ctx context.Context, tx pgx.Tx, rows []Row, src []pipeline.Record, dead pipeline.DeadLetterFunc) (int, rangeSet, error) {
	if len(rows) == 0 {
		return 0, rangeSet{}, nil
	}
	if _, err := tx.Exec(ctx, "SAVEPOINT fast"); err != nil {
		return 0, rangeSet{}, classify("setting a savepoint", err)
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"readings"}, readingColumns, pgx.CopyFromSlice(len(rows), rowValues(rows)))
	if err == nil {
		stored := newTouched()
		for _, r := range rows {
			addTime(&stored, r.Time)
		}
		return int(n), stored, nil
	}
	if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT fast"); rerr != nil {
		return 0, rangeSet{}, classify("rolling back to the savepoint", rerr)
	}
	switch kind(err) {
	case errDuplicate:
		w.met.merges.Inc()
		return w.merge(ctx, tx, rows, src, dead)
	case errRow:
		w.met.isolations.Inc()
		w.log.Warn("a batch has rows the database refuses; isolating them", "rows", len(rows), "err", err)
		return w.isolate(ctx, tx, rows, src, dead)
	default:
		return 0, rangeSet{}, classify(fmt.Sprintf("copying %d readings", len(rows)), err)
	}
}

const createStage = `CREATE TEMP TABLE IF NOT EXISTS stackvps_readings_stage
	(LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`

// merge stores rows that may already exist: stage them, then insert what is
// new. It returns the number of rows inserted and their time ranges.
func (w *Writer) merge(ctx context.Context, tx pgx.Tx, rows []Row, src []pipeline.Record, dead pipeline.DeadLetterFunc) (int, rangeSet, error) {
	if _, err := tx.Exec(ctx, createStage); err != nil {
		return 0, rangeSet{}, classify("creating the staging table", err)
	}
	n, sp, err := w.mergeOnce(ctx, tx, rows)
	if err == nil {
		return n, sp, nil
	}
	if kind(err) != errRow {
		return 0, rangeSet{}, err
	}
	w.met.isolations.Inc()
	return w.isolate(ctx, tx, rows, src, dead)
}

func (w *Writer) mergeOnce(ctx context.Context, tx pgx.Tx, rows []Row) (int, rangeSet, error) {
	if _, err := tx.Exec(ctx, "SAVEPOINT merge"); err != nil {
		return 0, rangeSet{}, classify("setting a savepoint", err)
	}
	n, sp, err := func() (int, rangeSet, error) {
		if _, err := tx.Exec(ctx, "TRUNCATE stackvps_readings_stage"); err != nil {
			return 0, rangeSet{}, err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stackvps_readings_stage"}, readingColumns, pgx.CopyFromSlice(len(rows), rowValues(rows))); err != nil {
			return 0, rangeSet{}, err
		}
		// The time ranges of what was inserted, not of the duplicates
		// skipped: clusters of times less than touchGap apart.
		rs, err := tx.Query(ctx, `WITH ins AS (
			INSERT INTO readings (time, point, variable, value, quality, device, raw_value, raw_unit)
			SELECT time, point, variable, value, quality, device, raw_value, raw_unit FROM stackvps_readings_stage
			ON CONFLICT (point, variable, time) DO NOTHING
			RETURNING time
		), gaps AS (
			SELECT time, (time - lag(time) OVER (ORDER BY time) > $1::interval)::int AS brk FROM ins
		), clusters AS (
			SELECT time, sum(brk) OVER (ORDER BY time) AS c FROM gaps
		)
		SELECT count(*), min(time), max(time) FROM clusters GROUP BY c`, touchGap)
		if err != nil {
			return 0, rangeSet{}, err
		}
		stored := newTouched()
		var n, c int
		var lo, hi time.Time
		if _, err := pgx.ForEachRow(rs, []any{&c, &lo, &hi}, func() error {
			n += c
			stored.add(timeRange{lo, hi.Add(time.Microsecond)})
			return nil
		}); err != nil {
			return 0, rangeSet{}, err
		}
		return n, stored, nil
	}()
	if err != nil {
		if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT merge"); rerr != nil {
			return 0, rangeSet{}, classify("rolling back to the savepoint", rerr)
		}
		if kind(err) == errRow {
			return 0, rangeSet{}, err
		}
		return 0, rangeSet{}, classify(fmt.Sprintf("merging %d readings", len(rows)), err)
	}
	if _, err := tx.Exec(ctx, "RELEASE SAVEPOINT merge"); err != nil {
		return 0, rangeSet{}, classify("releasing the savepoint", err)
	}
	return n, sp, nil
}

// isolate bisects rows until each refused row is alone, dead-letters those
// and stores the rest.
func (w *Writer) isolate(ctx context.Context, tx pgx.Tx, rows []Row, src []pipeline.Record, dead pipeline.DeadLetterFunc) (int, rangeSet, error) {
	if _, err := tx.Exec(ctx, createStage); err != nil {
		return 0, rangeSet{}, classify("creating the staging table", err)
	}
	n, sp, err := w.mergeOnce(ctx, tx, rows)
	if err == nil {
		return n, sp, nil
	}
	if kind(err) != errRow {
		return 0, rangeSet{}, err
	}
	if len(rows) == 1 {
		if derr := dead(ctx, src[0], pipeline.Permanent("refused_by_database", err)); derr != nil {
			return 0, rangeSet{}, derr
		}
		w.met.refused.Inc()
		return 0, rangeSet{}, nil
	}
	mid := len(rows) / 2
	a, spa, err := w.isolate(ctx, tx, rows[:mid], src[:mid], dead)
	if err != nil {
		return 0, rangeSet{}, err
	}
	b, spb, err := w.isolate(ctx, tx, rows[mid:], src[mid:], dead)
	stored := newTouched()
	for _, r := range append(spa.rs, spb.rs...) {
		stored.add(r)
	}
	return a + b, stored, err
}

func rowValues(rows []Row) func(int) ([]any, error) {
	return func(i int) ([]any, error) {
		r := rows[i]
		return []any{r.Time, r.Point, r.Variable, r.Value, r.Quality, nullable(r.Device), r.RawValue, r.RawUnit}, nil
	}
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// storeOffsets records the next offsets; they only move forward, so a
// consumer that lost its partitions and writes late cannot move them back.
func storeOffsets(ctx context.Context, tx pgx.Tx, group string, next map[string]map[int32]int64) error {
	var topics []string
	var parts []int32
	var offs []int64
	for t, ps := range next {
		for p, o := range ps {
			topics = append(topics, t)
			parts = append(parts, p)
			offs = append(offs, o)
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO sink_offsets (consumer_group, topic, partition, next_offset)
		SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, o)
		ON CONFLICT (consumer_group, topic, partition) DO UPDATE
		SET next_offset = EXCLUDED.next_offset, updated_at = now()
		WHERE sink_offsets.next_offset < EXCLUDED.next_offset`, group, topics, parts, offs)
	if err != nil {
		return classify("storing offsets", err)
	}
	return nil
}

// ensurePartitions creates, on plain PostgreSQL, the monthly partitions the
// rows need (rows of a missing month would land in the default partition).
func (w *Writer) ensurePartitions(ctx context.Context, rows []Row) error {
	if w.mode != ModePostgres {
		return nil
	}
	var need []time.Time
	for _, r := range rows {
		t := r.Time.UTC()
		m := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		if _, ok := w.months.Load(m); ok {
			continue
		}
		w.months.Store(m, false)
		need = append(need, m)
	}
	for _, m := range need {
		var created int
		if err := w.pool.QueryRow(ctx, `SELECT stackvps_ensure_readings_partitions($1, $2)`, m, m.AddDate(0, 1, 0)).Scan(&created); err != nil {
			w.months.Delete(m)
			return classify("creating a readings partition", err)
		}
		if created > 0 {
			w.log.Info("readings partition created", "month", m.Format("2006-01"))
		}
	}
	return nil
}

type errKind int

const (
	errOther     errKind = iota
	errDuplicate         // unique violation: merge
	errRow               // the content of some row is refused: isolate
	errTransient         // the database is unavailable: retry
)

// kind classifies a database error by SQLSTATE.
func kind(err error) errKind {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return errOther
		}
		// No SQLSTATE: the connection failed (refused, reset, EOF).
		return errTransient
	}
	if pg.Code == "23505" {
		return errDuplicate
	}
	switch pg.Code[:2] {
	case "22", "23": // data exception, integrity constraint violation
		return errRow
	case "08", "40", "53", "57", "58": // connection, rollback, resources, operator, system
		return errTransient
	}
	if pg.Code == "55P03" || pg.Code == "55006" { // lock not available, object in use
		return errTransient
	}
	return errOther
}

// classify wraps err with what was being done, marking transient errors so
// the stage retries them. Other errors (a missing table, a bug) stop the
// stage rather than dead-letter good data.
func classify(doing string, err error) error {
	err = fmt.Errorf("%s: %w", doing, err)
	if kind(err) == errTransient || pgconn.SafeToRetry(err) {
		return pipeline.Transient(err)
	}
	return err
}

type writerMetrics struct {
	rows, duplicates, merges, isolations, refused prometheus.Counter
	write                                         prometheus.Histogram
}

func newWriterMetrics(reg prometheus.Registerer) (*writerMetrics, error) {
	const ns, sub = "stackvps", "sink"
	m := &writerMetrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rows_written_total", Help: "Readings stored."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rows_duplicate_total", Help: "Readings not stored because the same (point, variable, time) was already stored."}),
		merges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "merge_batches_total", Help: "Batches that met stored rows and were merged instead of copied."}),
		isolations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "isolations_total", Help: "Batches bisected to isolate rows the database refused."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rows_refused_total", Help: "Rows the database refused, dead-lettered."}),
		write: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "write_seconds", Help: "Time to store one batch with its offsets.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
	}
	for _, c := range []prometheus.Collector{m.rows, m.duplicates, m.merges, m.isolations, m.refused, m.write} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

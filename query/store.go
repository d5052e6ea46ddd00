package query

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/points"
)

// store reads readings, rollups and devices. Every query is a constant SQL
// text with bind parameters; the only identifiers put into SQL text are the
// table and column names of the fixed sources below.
type store struct {
	pool *pgxpool.Pool
}

// source is a table the data endpoint reads: readings, or one of the
// rollups, with the SQL of a page built once from constant names.
type source struct {
	// bucket is "" for raw readings, else 1m, 1h or 1d.
	bucket  string
	table   string
	timeCol string
	columns []column
	// pageSQL, pageVarSQL and pageVarsSQL select one page: of every
	// variable, of one, of several (three texts, so that each gets the
	// plan it needs: one variable is an equality the primary key's range
	// scan can use while keeping its order, several are a filter).
	pageSQL, pageVarSQL, pageVarsSQL string
}

// sources are the tables the data endpoint reads, by bucket; "" is raw.
var sources = map[string]*source{
	"":   newSource("", "readings", "time", rawColumns),
	"1m": newSource("1m", "readings_1m", "bucket", bucketColumns),
	"1h": newSource("1h", "readings_1h", "bucket", bucketColumns),
	"1d": newSource("1d", "readings_1d", "bucket", bucketColumns),
}

func newSource(bucket, table, timeCol string, cols []column) *source {
	s := &source{bucket: bucket, table: table, timeCol: timeCol, columns: cols}
	s.pageSQL = s.buildPageSQL("")
	s.pageVarSQL = s.buildPageSQL(" AND variable = (@variables::text[])[1]")
	s.pageVarsSQL = s.buildPageSQL(" AND variable = ANY(@variables::text[])")
	return s
}

// buildPageSQL returns the page query. Rows come in primary-key order
// (point, variable, time), after the cursor's key, at most @n of them plus
// one to tell whether another page follows. The window adds to every row
// how many rows the page has and the key of its n-th row (the next
// cursor), so the server knows the next link before it streams the first
// row, and the database holds one page at most while the server holds none.
func (s *source) buildPageSQL(varFilter string) string {
	names := make([]string, len(s.columns))
	for i, c := range s.columns {
		names[i] = c.name
	}
	cols := strings.Join(names, ", ")
	key := "point, variable, " + s.timeCol
	filter := "point = ANY(@points::text[])" + varFilter
	return `SELECT ` + cols + `, count(*) OVER w,
	nth_value(point, @n::int) OVER w, nth_value(variable, @n::int) OVER w, nth_value(` + s.timeCol + `, @n::int) OVER w
FROM (SELECT ` + cols + ` FROM ` + s.table + `
	WHERE ` + filter + ` AND ` + s.timeCol + ` >= @from::timestamptz AND ` + s.timeCol + ` < @to::timestamptz
	  AND (` + key + `) > (@after_point::text, @after_variable::text, @after_time::timestamptz)
	ORDER BY ` + key + ` LIMIT @n::int + 1) page
WINDOW w AS (ORDER BY ` + key + ` ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
ORDER BY ` + key
}

// customPlan runs a query as an unnamed statement, described then
// executed, still with bind parameters: PostgreSQL plans it for the actual
// values every time and results stay binary. A cached prepared statement
// switches to a generic plan after five runs, which cannot prune partitions
// at plan time nor see the arrays' sizes: a day of readings went from 7 ms
// to 44 ms.
const customPlan = pgx.QueryExecModeDescribeExec

// dataQuery is one page of a data request.
type dataQuery struct {
	src       *source
	points    []string
	variables []string // nil: every variable
	from, to  time.Time
	after     *cursor // nil: the first page
	pageSize  int
	query     [8]byte // the fingerprint, for the next cursor
}

// rowIter streams rows of a query into rec.
type rowIter struct {
	rows    pgx.Rows
	rec     record
	targets []any
	// pageRows, nPoint, nVariable and nTime are the window columns of a
	// data page.
	pageRows  int64
	nPoint    *string
	nVariable *string
	nTime     *time.Time
	// limit stops the iteration after that many rows (0: no limit); the
	// data page's extra row only says another page follows.
	limit   int
	emitted int
	first   bool // rec holds the first row, read by start
	done    bool
	scanErr error
}

// start reads the first row, so that a failing query is an error before
// any response is written.
func (it *rowIter) start() error {
	if it.rows.Next() {
		if err := it.rows.Scan(it.targets...); err != nil {
			it.rows.Close()
			return fmt.Errorf("reading a row: %w", err)
		}
		it.first = true
		return nil
	}
	it.done = true
	it.rows.Close()
	if err := it.rows.Err(); err != nil {
		return fmt.Errorf("querying: %w", err)
	}
	return nil
}

// next advances to the next row; false at the end or on error (see err).
func (it *rowIter) next() bool {
	if it.done || (it.limit > 0 && it.emitted >= it.limit) {
		it.close()
		return false
	}
	if it.first {
		it.first = false
		it.emitted++
		return true
	}
	if !it.rows.Next() {
		it.close()
		return false
	}
	if err := it.rows.Scan(it.targets...); err != nil {
		it.scanErr = err
		it.close()
		return false
	}
	it.emitted++
	return true
}

func (it *rowIter) close() {
	it.done = true
	it.rows.Close()
}

// err returns the error that ended the iteration, if any.
func (it *rowIter) err() error {
	if it.scanErr != nil {
		return fmt.Errorf("reading a row: %w", it.scanErr)
	}
	if err := it.rows.Err(); err != nil {
		return fmt.Errorf("reading rows: %w", err)
	}
	return nil
}

// page runs one page of q. The returned iterator yields at most
// q.pageSize rows; next is the cursor of the following page, nil when this
// page is the last.
func (s *store) page(ctx context.Context, q dataQuery) (*rowIter, *cursor, error) {
	args := pgx.NamedArgs{
		"points": q.points, "from": q.from, "to": q.to, "n": q.pageSize,
		"after_point": "", "after_variable": "", "after_time": q.from,
	}
	if q.after != nil {
		args["after_point"], args["after_variable"], args["after_time"] = q.after.point, q.after.variable, q.after.time
	}
	sql := q.src.pageSQL
	switch {
	case len(q.variables) == 1:
		sql = q.src.pageVarSQL
		args["variables"] = q.variables
	case q.variables != nil:
		sql = q.src.pageVarsSQL
		args["variables"] = q.variables
	}
	rows, err := s.pool.Query(ctx, sql, customPlan, args)
	if err != nil {
		return nil, nil, fmt.Errorf("querying %s: %w", q.src.table, err)
	}
	it := &rowIter{rows: rows, limit: q.pageSize}
	it.targets = append(it.rec.targets(q.src.columns), &it.pageRows, &it.nPoint, &it.nVariable, &it.nTime)
	if err := it.start(); err != nil {
		return nil, nil, fmt.Errorf("querying %s: %w", q.src.table, err)
	}
	var next *cursor
	if it.pageRows > int64(q.pageSize) && it.nPoint != nil && it.nVariable != nil && it.nTime != nil {
		next = &cursor{point: *it.nPoint, variable: *it.nVariable, time: it.nTime.UTC(), query: q.query}
	}
	// The window columns are the same on every row: skip them after the
	// first (a nil destination is not decoded).
	for i := len(q.src.columns); i < len(it.targets); i++ {
		it.targets[i] = nil
	}
	return it, next, nil
}

// latestSQL returns the newest reading of every variable of each point:
// the variables are found with a loose index scan of the primary key (one
// probe per variable, not a scan of the readings), and each latest reading
// with one backward probe.
const latestSQL = `WITH RECURSIVE s AS (
	SELECT p.point, (SELECT min(r.variable) FROM readings r WHERE r.point = p.point) AS variable
	FROM unnest(@points::text[]) AS p(point)
	UNION ALL
	SELECT s.point, (SELECT min(r.variable) FROM readings r WHERE r.point = s.point AND r.variable > s.variable)
	FROM s WHERE s.variable IS NOT NULL
)
SELECT l.time, s.point, s.variable, l.value, l.quality
FROM s CROSS JOIN LATERAL (
	SELECT r.time, r.value, r.quality FROM readings r
	WHERE r.point = s.point AND r.variable = s.variable ORDER BY r.time DESC LIMIT 1) l
WHERE s.variable IS NOT NULL
ORDER BY s.point, s.variable`

// latestVarsSQL is latestSQL for the named variables only.
const latestVarsSQL = `SELECT l.time, p.point, v.variable, l.value, l.quality
FROM unnest(@points::text[]) AS p(point) CROSS JOIN unnest(@variables::text[]) AS v(variable)
CROSS JOIN LATERAL (
	SELECT r.time, r.value, r.quality FROM readings r
	WHERE r.point = p.point AND r.variable = v.variable ORDER BY r.time DESC LIMIT 1) l
ORDER BY p.point, v.variable`

// latest returns the newest reading of each point and variable (every
// variable when vars is nil), ordered by point and variable.
func (s *store) latest(ctx context.Context, pts, vars []string) (*rowIter, error) {
	sql, args := latestSQL, pgx.NamedArgs{"points": pts}
	if vars != nil {
		sql, args["variables"] = latestVarsSQL, vars
	}
	rows, err := s.pool.Query(ctx, sql, customPlan, args)
	if err != nil {
		return nil, fmt.Errorf("querying the latest readings: %w", err)
	}
	it := &rowIter{rows: rows}
	it.targets = it.rec.targets(rawColumns)
	if err := it.start(); err != nil {
		return nil, fmt.Errorf("querying the latest readings: %w", err)
	}
	return it, nil
}

// errNoDevice is device's answer for an unknown device.
var errNoDevice = errors.New("no such device")

// device returns the device with id, or errNoDevice.
func (s *store) device(ctx context.Context, id string) (points.Device, error) {
	var d points.Device
	err := s.pool.QueryRow(ctx, `SELECT id, point, coalesce(provider, ''), active FROM devices WHERE id = $1`, id).
		Scan(&d.ID, &d.Point, &d.Provider, &d.Active)
	if errors.Is(err, pgx.ErrNoRows) {
		return points.Device{}, errNoDevice
	}
	if err != nil {
		return points.Device{}, fmt.Errorf("reading device %s: %w", id, err)
	}
	return d, nil
}

package query_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/query"
)

// row is one result row in a comparable form: raw rows fill value and
// quality, rollup rows min, max, avg, last and count.
type row struct {
	T                   int64 // Unix microseconds
	Point, Variable     string
	Value               float64
	Quality             int64
	Min, Max, Avg, Last float64
	Count               int64
}

// requireRowsEqual compares rows exactly, NaN equal to NaN (JSON's null
// reads as NaN).
func requireRowsEqual(t *testing.T, want, got []row, msg string) {
	t.Helper()
	requireRowsClose(t, want, got, 0, msg)
}

// requireRowsClose compares rows, averages within a relative tolerance
// (summation order changes the last bits).
func requireRowsClose(t *testing.T, want, got []row, tol float64, msg string) {
	t.Helper()
	require.Equal(t, len(want), len(got), "%s: row count", msg)
	eq := func(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }
	near := func(a, b float64) bool { return eq(a, b) || math.Abs(a-b) <= tol*math.Max(math.Abs(a), math.Abs(b)) }
	for i := range want {
		w, g := want[i], got[i]
		ok := w.T == g.T && w.Point == g.Point && w.Variable == g.Variable && eq(w.Value, g.Value) && w.Quality == g.Quality &&
			eq(w.Min, g.Min) && eq(w.Max, g.Max) && near(w.Avg, g.Avg) && eq(w.Last, g.Last) && w.Count == g.Count
		if !ok {
			t.Fatalf("%s: row %d differs:\nwant %+v\ngot  %+v", msg, i, w, g)
		}
	}
}

// page is one decoded page.
type page struct {
	rows   []row
	next   string // from the Link header
	inBody string // the next link the body carries (JSON next, Arrow metadata)
	cursor string
}

var linkRE = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// decodePage decodes a data or latest answer in any format.
func decodePage(t testing.TB, res response, bucketed bool) page {
	t.Helper()
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	var p page
	if l := res.header.Get("Link"); l != "" {
		m := linkRE.FindStringSubmatch(l)
		require.NotNil(t, m, "Link header %q", l)
		p.next = m[1]
	}
	ct := res.header.Get("Content-Type")
	switch {
	case ct == query.MediaJSON:
		var body struct {
			Next       *string           `json:"next"`
			NextCursor *string           `json:"next_cursor"`
			Results    []json.RawMessage `json:"results"`
		}
		require.NoError(t, json.Unmarshal(res.body, &body), "%s", res.body)
		if body.Next != nil {
			p.inBody = *body.Next
		}
		if body.NextCursor != nil {
			p.cursor = *body.NextCursor
		}
		for _, raw := range body.Results {
			var m map[string]any
			d := json.NewDecoder(bytes.NewReader(raw))
			d.UseNumber()
			require.NoError(t, d.Decode(&m))
			p.rows = append(p.rows, rowFromJSON(t, m, bucketed))
		}
	case ct == "text/csv; charset=utf-8; header=present":
		recs, err := csv.NewReader(bytes.NewReader(res.body)).ReadAll()
		require.NoError(t, err)
		require.NotEmpty(t, recs, "a header line")
		for _, rec := range recs[1:] {
			m := map[string]string{}
			for i, name := range recs[0] {
				m[name] = rec[i]
			}
			p.rows = append(p.rows, rowFromStrings(t, m, bucketed))
		}
	case ct == query.MediaArrow:
		rd, err := ipc.NewReader(bytes.NewReader(res.body))
		require.NoError(t, err)
		defer rd.Release()
		md := rd.Schema().Metadata()
		if i := md.FindKey("next"); i >= 0 {
			p.inBody = md.Values()[i]
		}
		if i := md.FindKey("next_cursor"); i >= 0 {
			p.cursor = md.Values()[i]
		}
		require.Equal(t, arrow.TIMESTAMP, rd.Schema().Field(0).Type.ID())
		for rd.Next() {
			p.rows = append(p.rows, rowsFromArrow(t, rd.RecordBatch(), bucketed)...)
		}
		require.NoError(t, rd.Err())
	default:
		t.Fatalf("unexpected Content-Type %q", ct)
	}
	return p
}

func rowFromJSON(t testing.TB, m map[string]any, bucketed bool) row {
	t.Helper()
	s := map[string]string{}
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			s[k] = "NaN"
		case json.Number:
			s[k] = v.String()
		case string:
			s[k] = v
		default:
			t.Fatalf("field %s: unexpected %T", k, v)
		}
	}
	return rowFromStrings(t, s, bucketed)
}

func rowFromStrings(t testing.TB, m map[string]string, bucketed bool) row {
	t.Helper()
	f := func(k string) float64 {
		v, err := strconv.ParseFloat(m[k], 64)
		require.NoError(t, err, "%s=%q", k, m[k])
		return v
	}
	i := func(k string) int64 {
		v, err := strconv.ParseInt(m[k], 10, 64)
		require.NoError(t, err, "%s=%q", k, m[k])
		return v
	}
	tk := "time"
	if bucketed {
		tk = "bucket"
	}
	ts, err := time.Parse(time.RFC3339Nano, m[tk])
	require.NoError(t, err)
	r := row{T: ts.UnixMicro(), Point: m["point"], Variable: m["variable"]}
	if bucketed {
		r.Min, r.Max, r.Avg, r.Last, r.Count = f("min"), f("max"), f("avg"), f("last"), i("count")
	} else {
		r.Value, r.Quality = f("value"), i("quality")
	}
	return r
}

func rowsFromArrow(t testing.TB, rec arrow.RecordBatch, bucketed bool) []row {
	t.Helper()
	col := func(name string) arrow.Array {
		idx := rec.Schema().FieldIndices(name)
		require.Len(t, idx, 1, "column %s", name)
		return rec.Column(idx[0])
	}
	tk := "time"
	if bucketed {
		tk = "bucket"
	}
	ts := col(tk).(*array.Timestamp)
	pts, vars := col("point").(*array.String), col("variable").(*array.String)
	out := make([]row, rec.NumRows())
	for i := range out {
		r := row{T: int64(ts.Value(i)), Point: pts.Value(i), Variable: vars.Value(i)}
		if bucketed {
			r.Min, r.Max = col("min").(*array.Float64).Value(i), col("max").(*array.Float64).Value(i)
			r.Avg, r.Last = col("avg").(*array.Float64).Value(i), col("last").(*array.Float64).Value(i)
			r.Count = col("count").(*array.Int64).Value(i)
		} else {
			r.Value, r.Quality = col("value").(*array.Float64).Value(i), int64(col("quality").(*array.Int32).Value(i))
		}
		out[i] = r
	}
	return out
}

// fetchAll follows next links from path, checking every page's size and
// that the body's next link agrees with the Link header.
func fetchAll(t testing.TB, f *fixture, role, path, accept string, pageSize int, bucketed bool) ([]row, int) {
	t.Helper()
	var all []row
	pages := 0
	for path != "" {
		res := f.as(role, req{method: http.MethodGet, path: path, header: map[string]string{"Accept": accept}})
		p := decodePage(t, res, bucketed)
		pages++
		require.LessOrEqual(t, len(p.rows), pageSize, "page %d", pages)
		if accept != query.MediaCSV {
			require.Equal(t, p.next, p.inBody, "the body's next link is the Link header's")
		}
		if p.next != "" {
			require.Len(t, p.rows, pageSize, "a page with a next link is full")
			u, err := url.Parse(p.next)
			require.NoError(t, err)
			if accept != query.MediaCSV {
				require.Equal(t, u.Query().Get("cursor"), p.cursor)
			}
		}
		all = append(all, p.rows...)
		path = p.next
		require.Less(t, pages, 10000, "pagination does not end")
	}
	return all, pages
}

// sqlRows reads the expected rows straight from the database.
func sqlRows(t *testing.T, f *fixture, sql string, args ...any) []row {
	t.Helper()
	rows, err := f.pool.Query(f.ctx, sql, args...)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		var ts time.Time
		var err error
		if len(r.FieldDescriptions()) == 5 {
			err = r.Scan(&ts, &x.Point, &x.Variable, &x.Value, &x.Quality)
		} else {
			err = r.Scan(&ts, &x.Point, &x.Variable, &x.Min, &x.Max, &x.Avg, &x.Last, &x.Count)
		}
		x.T = ts.UnixMicro()
		return x, err
	})
	require.NoError(t, err)
	return out
}

// seedRaw inserts a reading per minute per variable for 3 hours on both
// points, with a NaN and a quality flag among them, and returns the start.
func seedRaw(f *fixture) time.Time {
	start := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	var rs []reading
	for _, pt := range []string{pointOwn, pointForeign} {
		for _, v := range []string{"flow", "level", "totalizer"} {
			for m := range 180 {
				val := float64(m)*1.5 + float64(len(v))
				rs = append(rs, reading{t: start.Add(time.Duration(m)*time.Minute + 123456*time.Microsecond), point: pt, variable: v, value: val, quality: int32(m % 3)})
			}
		}
	}
	rs = append(rs, reading{t: start.Add(90 * time.Minute), point: pointOwn, variable: "ph", value: math.NaN(), quality: 4})
	f.insertReadings(rs)
	return start
}

func dataPath(v url.Values) string { return "/api/telemetry/data/?" + v.Encode() }

// TestDataPaginationIntegration follows next links through multi-page
// results in every format and page size, and compares the whole with SQL:
// no gaps, no duplicates, same order.
func TestDataPaginationIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start := seedRaw(f)
	from, to := start.Add(10*time.Minute), start.Add(170*time.Minute)

	cases := []struct {
		name   string
		role   string
		points []string
		vars   []string
		want   string
	}{
		{"one point every variable", rolePrimary, []string{pointOwn}, nil,
			`SELECT time, point, variable, value, quality FROM readings WHERE point = $1 AND time >= $2 AND time < $3 ORDER BY point, variable, time`},
		{"one point one variable", roleSecondary, []string{pointOwn}, []string{"level"},
			`SELECT time, point, variable, value, quality FROM readings WHERE point = $1 AND variable = 'level' AND time >= $2 AND time < $3 ORDER BY point, variable, time`},
		{"two points two variables", roleAdmin, []string{pointOwn, pointForeign}, []string{"totalizer", "flow"},
			`SELECT time, point, variable, value, quality FROM readings WHERE point = ANY($1) AND variable IN ('flow', 'totalizer') AND time >= $2 AND time < $3 ORDER BY point, variable, time`},
	}
	for _, tc := range cases {
		var want []row
		if len(tc.points) == 1 {
			want = sqlRows(t, f, tc.want, tc.points[0], from, to)
		} else {
			want = sqlRows(t, f, tc.want, tc.points, from, to)
		}
		require.NotEmpty(t, want)
		for _, accept := range []string{query.MediaJSON, query.MediaCSV, query.MediaArrow} {
			for _, size := range []int{1000, 7, 160, len(want)} {
				t.Run(fmt.Sprintf("%s/%s/page_size=%d", tc.name, accept, size), func(t *testing.T) {
					v := url.Values{"point": tc.points, "from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)},
						"page_size": {strconv.Itoa(size)}}
					if tc.vars != nil {
						v["variable"] = tc.vars
					}
					got, pages := fetchAll(t, f, tc.role, dataPath(v), accept, size, false)
					requireRowsEqual(t, want, got, "paginated result")
					// The last page has no next link, even when it is full.
					require.Equal(t, (len(want)+size-1)/size, pages)
				})
			}
		}
	}

	t.Run("NaN", func(t *testing.T) {
		v := url.Values{"point": {pointOwn}, "variable": {"ph"}, "from": {start.Format(time.RFC3339)}, "to": {start.Add(3 * time.Hour).Format(time.RFC3339)}}
		res := f.as(roleAdmin, req{method: http.MethodGet, path: dataPath(v)})
		require.Equal(t, http.StatusOK, res.status, "%s", res)
		require.Contains(t, res.String(), `"value":null`, "NaN is null in JSON")
		res = f.as(roleAdmin, req{method: http.MethodGet, path: dataPath(v), header: map[string]string{"Accept": query.MediaCSV}})
		require.Contains(t, res.String(), ",NaN,4")
	})

	t.Run("default to is now", func(t *testing.T) {
		v := url.Values{"point": {pointOwn}, "from": {time.Now().Add(-time.Hour).Format(time.RFC3339)}}
		res := f.as(roleAdmin, req{method: http.MethodGet, path: dataPath(v)})
		require.Equal(t, http.StatusOK, res.status, "%s", res)
		require.Equal(t, []any{}, res.json(t)["results"])
		require.Nil(t, res.json(t)["next"])
		for _, accept := range []string{query.MediaCSV, query.MediaArrow} {
			p := decodePage(t, f.as(roleAdmin, req{method: http.MethodGet, path: dataPath(v), header: map[string]string{"Accept": accept}}), false)
			require.Empty(t, p.rows, "an empty result is a valid %s", accept)
			require.Empty(t, p.next)
		}
	})

	t.Run("cursor of another query", func(t *testing.T) {
		v := url.Values{"point": {pointOwn}, "from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}, "page_size": {"5"}}
		p := decodePage(t, f.as(roleAdmin, req{method: http.MethodGet, path: dataPath(v)}), false)
		require.NotEmpty(t, p.cursor)
		v.Set("cursor", p.cursor)
		v.Set("variable", "flow")
		res := f.as(roleAdmin, req{method: http.MethodGet, path: dataPath(v)})
		require.Equal(t, http.StatusBadRequest, res.status)
		require.Equal(t, "cursor", res.json(t)["param"])
	})
}

// TestDataBucketsIntegration reads the rollups after a refresh and compares
// every bucket with SQL over the rollup tables and with aggregates
// recomputed from the raw readings.
func TestDataBucketsIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var rs []reading
	for m := 0; m < 3*24*60; m += 7 { // every 7 minutes for 3 days
		ts := start.Add(time.Duration(m)*time.Minute + 13*time.Second)
		rs = append(rs, reading{t: ts, point: pointOwn, variable: "flow", value: math.Sin(float64(m)) * 10},
			reading{t: ts, point: pointOwn, variable: "totalizer", value: float64(m) * 0.25},
			reading{t: ts, point: pointForeign, variable: "flow", value: float64(m % 17)})
	}
	f.insertReadings(rs)
	f.refreshRollups(start, start.Add(4*24*time.Hour))

	from, to := start.Add(5*time.Hour), start.Add(60*time.Hour)
	recompute := map[string]string{
		"1m": `date_bin('1 minute', time, '2000-01-01 00:00:00+00')`,
		"1h": `date_bin('1 hour', time, '2000-01-01 00:00:00+00')`,
		"1d": `(date_trunc('day', time AT TIME ZONE (SELECT day_timezone FROM rollup_settings)) AT TIME ZONE (SELECT day_timezone FROM rollup_settings))`,
	}
	for _, bucket := range []string{"1m", "1h", "1d"} {
		want := sqlRows(t, f, `SELECT bucket, point, variable, min, max, avg, last, count FROM readings_`+bucket+`
			WHERE point = $1 AND bucket >= $2 AND bucket < $3 ORDER BY point, variable, bucket`, pointOwn, from, to)
		require.NotEmpty(t, want, bucket)
		fromRaw := sqlRows(t, f, `SELECT b, point, variable, min(value), max(value), avg(value),
				(array_agg(value ORDER BY time DESC))[1], count(*)
			FROM (SELECT `+recompute[bucket]+` AS b, * FROM readings WHERE point = $1) x
			WHERE b >= $2 AND b < $3 GROUP BY b, point, variable ORDER BY point, variable, b`, pointOwn, from, to)
		// On plain PostgreSQL readings_1h and readings_1d are computed from
		// the rollup below (avg = sum(avg*count)/sum(count)), which rounds
		// differently from avg over the raw values: avg within 1e-9.
		requireRowsClose(t, fromRaw, want, 1e-9, "rollup "+bucket+" against the raw readings")
		for _, accept := range []string{query.MediaJSON, query.MediaCSV, query.MediaArrow} {
			for _, size := range []int{1000, 13} {
				t.Run(fmt.Sprintf("bucket=%s/%s/page_size=%d", bucket, accept, size), func(t *testing.T) {
					v := url.Values{"point": {pointOwn}, "bucket": {bucket}, "from": {from.Format(time.RFC3339)},
						"to": {to.Format(time.RFC3339)}, "page_size": {strconv.Itoa(size)}}
					got, _ := fetchAll(t, f, roleSecondary, dataPath(v), accept, size, true)
					requireRowsEqual(t, want, got, "bucket "+bucket)
				})
			}
		}
	}

	t.Run("range limits", func(t *testing.T) {
		for _, tc := range []struct {
			bucket string
			span   time.Duration
			ok     bool
		}{
			{"", 31 * 24 * time.Hour, true}, {"", 32 * 24 * time.Hour, false},
			{"1m", query.MaxRange1m, true}, {"1m", query.MaxRange1m + time.Second, false},
			{"1h", query.MaxRange1h, true}, {"1h", query.MaxRange1h + time.Second, false},
			{"1d", query.MaxRange1d, true}, {"1d", query.MaxRange1d + time.Second, false},
		} {
			v := url.Values{"point": {pointOwn}, "from": {start.Format(time.RFC3339)}, "to": {start.Add(tc.span).Format(time.RFC3339)}}
			if tc.bucket != "" {
				v.Set("bucket", tc.bucket)
			}
			res := f.as(roleAdmin, req{method: http.MethodGet, path: dataPath(v)})
			if tc.ok {
				require.Equal(t, http.StatusOK, res.status, "%s %s: %s", tc.bucket, tc.span, res)
			} else {
				require.Equal(t, http.StatusBadRequest, res.status, "%s %s: %s", tc.bucket, tc.span, res)
				require.Equal(t, "to", res.json(t)["param"])
			}
		}
	})
}

// TestLatestIntegration compares the latest readings with SQL, for named
// and for every visible point, in every format.
func TestLatestIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seedRaw(f)
	const wantSQL = `SELECT DISTINCT ON (point, variable) time, point, variable, value, quality FROM readings
		WHERE point = ANY($1) ORDER BY point, variable, time DESC`
	for _, accept := range []string{query.MediaJSON, query.MediaCSV, query.MediaArrow} {
		t.Run(accept, func(t *testing.T) {
			res := f.as(rolePrimary, req{method: http.MethodGet, path: "/api/telemetry/latest/", header: map[string]string{"Accept": accept}})
			got := decodePage(t, res, false)
			require.Empty(t, got.next)
			requireRowsEqual(t, sqlRows(t, f, wantSQL, []string{pointOwn}), got.rows, "every visible point")

			res = f.as(roleAdmin, req{method: http.MethodGet, path: "/api/telemetry/latest/?point=" + pointForeign + "&point=" + pointOwn + "&variable=level&variable=ph",
				header: map[string]string{"Accept": accept}})
			got = decodePage(t, res, false)
			want := sqlRows(t, f, `SELECT DISTINCT ON (point, variable) time, point, variable, value, quality FROM readings
				WHERE point = ANY($1) AND variable IN ('level', 'ph') ORDER BY point, variable, time DESC`, []string{pointOwn, pointForeign})
			require.Len(t, want, 3)
			requireRowsEqual(t, want, got.rows, "named points and variables")
		})
	}
	res := f.as(roleStranger, req{method: http.MethodGet, path: "/api/telemetry/latest/?point=" + pointOwn})
	require.Equal(t, http.StatusNotFound, res.status)
}

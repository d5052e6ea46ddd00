package query_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/query"
)

// BenchmarkData measures GET /api/telemetry/data/ end to end (HTTP server,
// authentication, authorization, the page query on PostgreSQL, encoding)
// for one point: a year of hourly rollups (2024: 8784 buckets, one page), a day
// of raw readings at one per minute (1440 rows, one page) and at one per
// second (86400 rows, two pages of 50000). One op fetches the whole result,
// following next links; clients run concurrently, each op's latency is
// recorded, and p50/p99 are reported with the rows per second.
//
//	. .local/env && go test -run '^$' -bench BenchmarkData -benchtime 100x -count 6 ./query/ | tee new.txt
//	benchstat old.txt new.txt
func BenchmarkData(b *testing.B) {
	f := newFixture(b)
	yearEnd := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	yearStart := yearEnd.AddDate(-1, 0, 0)
	day := time.Date(2025, 6, 10, 0, 0, 0, 0, time.UTC)
	_, err := f.pool.Exec(f.ctx, `SELECT stackvps_ensure_readings_partitions($1, $2)`, yearStart, day.AddDate(0, 1, 0))
	require.NoError(b, err)

	var rs []reading
	for t := yearStart; t.Before(yearEnd); t = t.Add(10 * time.Minute) { // 6 per hour: 8760 hourly buckets
		rs = append(rs, reading{t: t, point: pointOwn, variable: "flow", value: float64(t.Unix()%977) / 10})
	}
	for s := range 86400 {
		t := day.Add(time.Duration(s) * time.Second)
		rs = append(rs, reading{t: t, point: pointOwn, variable: "level", value: 40 + float64(s%600)/100})
		if s%60 == 0 {
			rs = append(rs, reading{t: t, point: pointOwn, variable: "totalizer", value: float64(s) * 0.3})
		}
	}
	f.insertReadings(rs)
	f.refreshRollups(yearStart, yearEnd)
	_, err = f.pool.Exec(f.ctx, `ANALYZE`)
	require.NoError(b, err)

	queries := []struct {
		name string
		v    url.Values
		rows int
	}{
		{"rollup_1h_year", url.Values{"point": {pointOwn}, "variable": {"flow"}, "bucket": {"1h"},
			"from": {yearStart.Format(time.RFC3339)}, "to": {yearEnd.Format(time.RFC3339)}, "page_size": {"10000"}}, int(yearEnd.Sub(yearStart) / time.Hour)},
		{"raw_day_1min", url.Values{"point": {pointOwn}, "variable": {"totalizer"},
			"from": {day.Format(time.RFC3339)}, "to": {day.AddDate(0, 0, 1).Format(time.RFC3339)}, "page_size": {"50000"}}, 1440},
		{"raw_day_1s", url.Values{"point": {pointOwn}, "variable": {"level"},
			"from": {day.Format(time.RFC3339)}, "to": {day.AddDate(0, 0, 1).Format(time.RFC3339)}, "page_size": {"50000"}}, 86400},
	}
	formats := map[string]string{"json": query.MediaJSON, "csv": query.MediaCSV, "arrow": query.MediaArrow}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	fetch := func(path, accept string) (int, error) {
		pages := 0
		for path != "" {
			hr, err := http.NewRequestWithContext(f.ctx, http.MethodGet, f.srv.URL+path, nil)
			if err != nil {
				return 0, err
			}
			hr.Header.Set("Authorization", "Token "+f.tokens[rolePrimary])
			hr.Header.Set("Accept", accept)
			res, err := client.Do(hr)
			if err != nil {
				return 0, err
			}
			_, err = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("status %d: %v", res.StatusCode, err)
			}
			path = ""
			if m := linkRE.FindStringSubmatch(res.Header.Get("Link")); m != nil {
				path = m[1]
			}
			pages++
		}
		return pages, nil
	}

	for _, q := range queries {
		path := dataPath(q.v)
		// The result is right before it is timed.
		size, _ := strconv.Atoi(q.v.Get("page_size"))
		bucketed := q.v.Get("bucket") != ""
		got, _ := fetchAll(b, f, rolePrimary, path, query.MediaArrow, size, bucketed)
		require.Equal(b, q.rows, len(got), q.name)
		for _, fname := range []string{"json", "csv", "arrow"} {
			for _, clients := range []int{1, 8} {
				b.Run(fmt.Sprintf("query=%s/format=%s/clients=%d", q.name, fname, clients), func(b *testing.B) {
					b.ReportAllocs()
					lat := make([]time.Duration, b.N)
					var next atomic.Int64
					var failed atomic.Value
					var wg sync.WaitGroup
					b.ResetTimer()
					start := time.Now()
					// b.N ops shared by the clients (b.Loop cannot be shared
					// between goroutines).
					for range clients {
						wg.Go(func() {
							for {
								i := next.Add(1) - 1
								if i >= int64(b.N) {
									return
								}
								t0 := time.Now()
								if _, err := fetch(path, formats[fname]); err != nil {
									failed.Store(err)
									return
								}
								lat[i] = time.Since(t0)
							}
						})
					}
					wg.Wait()
					elapsed := time.Since(start)
					b.StopTimer()
					if err, _ := failed.Load().(error); err != nil {
						b.Fatal(err)
					}
					slices.Sort(lat)
					pct := func(p float64) float64 {
						return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
					}
					b.ReportMetric(pct(0.50), "p50-ms")
					b.ReportMetric(pct(0.99), "p99-ms")
					b.ReportMetric(float64(q.rows)*float64(b.N)/elapsed.Seconds(), "rows/s")
				})
			}
		}
	}
}

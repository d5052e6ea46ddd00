package query

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
)

// The longest range of one bucketed data request. Raw data is bounded by
// api.max_range (default 31 days); a rollup's limit is the larger of its own
// and api.max_range. Each keeps a full range of one series within about 10^5
// rows: a quarter of minutes (92 days: any calendar quarter), two years of
// hours (731 days: any two calendar years), twenty years of days (7305
// days). Pagination bounds each response whatever the range.
const (
	MaxRange1m = 92 * 24 * time.Hour
	MaxRange1h = 731 * 24 * time.Hour
	MaxRange1d = 7305 * 24 * time.Hour
)

// limits are what one data request may ask for.
type limits struct {
	maxRange         map[string]time.Duration // by bucket; "" is raw
	defPage, maxPage int
}

func newLimits(api config.API) limits {
	raw := api.MaxRange.Std()
	return limits{
		maxRange: map[string]time.Duration{"": raw, "1m": max(raw, MaxRange1m), "1h": max(raw, MaxRange1h), "1d": max(raw, MaxRange1d)},
		defPage:  api.DefaultPageSize, maxPage: api.MaxPageSize,
	}
}

// dataParams are the query parameters of GET /api/telemetry/data/.
var dataParams = []string{"point", "variable", "from", "to", "bucket", "page_size", "cursor"}

// parseDataQuery reads and validates the parameters of a data request.
func (a *API) parseDataQuery(r *http.Request) (dataQuery, error) {
	p, err := parseParams(r, dataParams, "point", "variable")
	if err != nil {
		return dataQuery{}, err
	}
	var q dataQuery
	bucket := p.get("bucket")
	if bucket == "raw" {
		bucket = ""
	}
	src, ok := sources[bucket]
	if !ok {
		return q, badParam("bucket", "%s: want 1m, 1h or 1d, or raw (the default)", quoted(bucket))
	}
	q.src = src
	if q.points, err = pointsParam(p, true, maxPoints); err != nil {
		return q, err
	}
	if q.variables, err = variablesParam(p); err != nil {
		return q, err
	}
	if !p.has("from") {
		return q, badParam("from", "required: the start of the range, an RFC 3339 time such as 2024-05-01T00:00:00Z")
	}
	if q.from, err = parseTime("from", p.get("from")); err != nil {
		return q, err
	}
	if p.has("to") {
		if q.to, err = parseTime("to", p.get("to")); err != nil {
			return q, err
		}
	} else {
		q.to = a.now().UTC().Truncate(time.Microsecond).Add(time.Microsecond)
	}
	if !q.from.Before(q.to) {
		return q, badParam("to", "must be after from (%s)", q.from.Format(time.RFC3339Nano))
	}
	if limit := a.limits.maxRange[bucket]; q.to.Sub(q.from) > limit {
		what := "raw data"
		if bucket != "" {
			what = "bucket=" + bucket
		}
		return q, badParam("to", "the range from %s to %s spans %s; %s allows at most %s",
			q.from.Format(time.RFC3339), q.to.Format(time.RFC3339), q.to.Sub(q.from).Round(time.Second), what, durationText(limit))
	}
	if q.pageSize, err = pageSizeParam(p, a.limits.defPage, a.limits.maxPage); err != nil {
		return q, err
	}
	q.query = fingerprint(bucket, q.points, q.variables, q.from, q.to)
	if p.has("cursor") {
		c, err := decodeCursor(p.get("cursor"), q.query)
		if err != nil {
			return q, err
		}
		q.after = &c
	}
	return q, nil
}

// nextURL returns the path and query of the page after q, starting after c:
// the same query with the range made explicit, and the cursor.
func nextURL(r *http.Request, q dataQuery, c string) string {
	v := url.Values{}
	v["point"] = q.points
	if q.variables != nil {
		v["variable"] = q.variables
	}
	v.Set("from", q.from.Format(time.RFC3339Nano))
	v.Set("to", q.to.Format(time.RFC3339Nano))
	if q.src.bucket != "" {
		v.Set("bucket", q.src.bucket)
	}
	v.Set("page_size", strconv.Itoa(q.pageSize))
	v.Set("cursor", c)
	return r.URL.EscapedPath() + "?" + v.Encode()
}

// requireRead checks that the principal can read every point: the first
// one it cannot is a 404 naming point, the same answer as for a point that
// does not exist.
func (a *API) requireRead(ctx context.Context, p accounts.Principal, pts []string) error {
	if len(pts) == 1 {
		return fromAccounts(a.acc.Can(ctx, p, pts[0], accounts.PermRead), "point")
	}
	visible, err := a.acc.VisiblePoints(ctx, p)
	if err != nil {
		return fromAccounts(err, "point")
	}
	set := make(map[string]bool, len(visible))
	for _, v := range visible {
		set[v] = true
	}
	for _, pt := range pts {
		if !set[pt] {
			return &Error{Status: http.StatusNotFound, Param: "point", Message: fmt.Sprintf("point %q %s", pt, accounts.ErrNotFound)}
		}
	}
	return nil
}

// handleData serves GET /api/telemetry/data/: one page of readings or of
// a rollup, streamed.
func (a *API) handleData(w http.ResponseWriter, r *http.Request) error {
	format, err := negotiate(r, tabular)
	if err != nil {
		return err
	}
	q, err := a.parseDataQuery(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.QueryTimeout)
	defer cancel()
	if err := a.requireRead(ctx, principal(r), q.points); err != nil {
		return err
	}
	it, next, err := a.store.page(ctx, q)
	if err != nil {
		return err
	}
	info := pageInfo{paged: true}
	if next != nil {
		info.cursor = next.encode()
		info.next = nextURL(r, q, info.cursor)
	}
	return writeTable(w, format, q.src.columns, info, it)
}

// handleLatest serves GET /api/telemetry/latest/: the newest reading of
// each point and variable.
func (a *API) handleLatest(w http.ResponseWriter, r *http.Request) error {
	format, err := negotiate(r, tabular)
	if err != nil {
		return err
	}
	p, err := parseParams(r, []string{"point", "variable"}, "point", "variable")
	if err != nil {
		return err
	}
	pts, err := pointsParam(p, false, maxLatestPoints)
	if err != nil {
		return err
	}
	vars, err := variablesParam(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.QueryTimeout)
	defer cancel()
	pr := principal(r)
	if len(pts) == 0 {
		if pts, err = a.acc.VisiblePoints(ctx, pr); err != nil {
			return fromAccounts(err, "point")
		}
	} else if err := a.requireRead(ctx, pr, pts); err != nil {
		return err
	}
	if pts == nil {
		pts = []string{}
	}
	it, err := a.store.latest(ctx, pts, vars)
	if err != nil {
		return err
	}
	return writeTable(w, format, rawColumns, pageInfo{}, it)
}

package query

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
)

// Limits of what one request may ask for.
const (
	// maxPoints bounds the points of one data request.
	maxPoints = 50
	// maxVariables bounds the variables of one request.
	maxVariables = 20
	// maxLatestPoints bounds the points one latest request names (without
	// point it covers every visible point).
	maxLatestPoints = 1000
	// maxIdentLen is the longest point code or device id (accounts).
	maxIdentLen = 128
	// maxCursorLen bounds the cursor parameter.
	maxCursorLen = 1024
	// maxBody bounds a JSON request body.
	maxBody = 64 << 10
)

// params is a request's query string, parsed strictly: an unknown
// parameter, a repeated single-valued one and a malformed query string are
// errors naming the parameter.
type params struct {
	v url.Values
}

// parseParams parses r's query string, admitting only the names in known;
// those in multi may repeat.
func parseParams(r *http.Request, known []string, multi ...string) (params, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return params{}, badParam(malformedParam(r.URL.RawQuery), "malformed query string: %v", err)
	}
	for name, vals := range v {
		if !slices.Contains(known, name) {
			if len(known) == 0 {
				return params{}, badParam(printable(name), "unknown parameter; this endpoint takes no query parameters")
			}
			return params{}, badParam(printable(name), "unknown parameter; this endpoint takes %s", strings.Join(known, ", "))
		}
		if len(vals) > 1 && !slices.Contains(multi, name) {
			return params{}, badParam(name, "given %d times; give it once", len(vals))
		}
	}
	return params{v: v}, nil
}

// get returns the parameter's value ("" when absent).
func (p params) get(name string) string { return p.v.Get(name) }

// has reports whether the parameter was given.
func (p params) has(name string) bool { return p.v.Has(name) }

// list returns the values of a repeatable parameter, deduplicated and
// sorted.
func (p params) list(name string) []string {
	out := slices.Clone(p.v[name])
	slices.Sort(out)
	return slices.Compact(out)
}

// malformedParam names the parameter of the first malformed pair of a raw
// query string: its key when the key itself is readable, else "query".
func malformedParam(raw string) string {
	for pair := range strings.SplitSeq(raw, "&") {
		key, val, _ := strings.Cut(pair, "=")
		k, kerr := url.QueryUnescape(key)
		_, verr := url.QueryUnescape(val)
		switch {
		case kerr == nil && verr != nil && k != "":
			return printable(k)
		case kerr != nil || strings.Contains(key, ";"):
			return "query"
		}
	}
	return "query"
}

// clip shortens s to at most 64 bytes, on a rune boundary, marking the cut.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// quoted returns s shortened and quoted, non-printable characters escaped,
// for echoing a client's input in an error.
func quoted(s string) string { return strconv.Quote(clip(s)) }

// printable is quoted without the quotes: for a parameter name.
func printable(s string) string {
	q := quoted(s)
	return q[1 : len(q)-1]
}

// checkIdent validates a point code or device id as the accounts package
// does: 1-128 characters, valid UTF-8, no spaces or control characters.
func checkIdent(param, s string) error {
	switch {
	case s == "":
		return badParam(param, "must not be empty")
	case len(s) > maxIdentLen:
		return badParam(param, "too long (%d bytes); at most %d", len(s), maxIdentLen)
	case !utf8.ValidString(s):
		return badParam(param, "not valid UTF-8")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return badParam(param, "%s: spaces and control characters are not allowed", quoted(s))
	}
	return nil
}

// variablePattern is what a variable name looks like: flow, totalizer,
// level_2, ph.
var variablePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

func checkVariable(s string) error {
	if !variablePattern.MatchString(s) {
		return badParam("variable", "%s is not a variable name (letters, digits, _ . : -, at most 64)", quoted(s))
	}
	return nil
}

// providerPattern is what a provider name looks like: kunak-bin, lorawan.
var providerPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// pointsParam returns the validated point codes of the parameter.
func pointsParam(p params, required bool, limit int) ([]string, error) {
	codes := p.list("point")
	if len(codes) == 0 && required {
		return nil, badParam("point", "required: give one or more point codes (point=P-1&point=P-2)")
	}
	if len(codes) > limit {
		return nil, badParam("point", "%d points; at most %d per request", len(codes), limit)
	}
	for _, c := range codes {
		if err := checkIdent("point", c); err != nil {
			return nil, err
		}
	}
	return codes, nil
}

// variablesParam returns the validated variables of the parameter; nil
// means every variable.
func variablesParam(p params) ([]string, error) {
	vars := p.list("variable")
	if len(vars) > maxVariables {
		return nil, badParam("variable", "%d variables; at most %d per request", len(vars), maxVariables)
	}
	for _, v := range vars {
		if err := checkVariable(v); err != nil {
			return nil, err
		}
	}
	return vars, nil
}

// parseTime parses an RFC 3339 time. A space where the offset's "+"
// belongs, as an unencoded "+" in a query string arrives, is read as "+".
// The result is rounded up to the database's microsecond, which keeps
// "time >= from" and "time < to" exact.
func parseTime(param, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, badParam(param, "must not be empty; want an RFC 3339 time such as 2024-05-01T00:00:00Z")
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil && strings.Count(s, " ") == 1 {
		t, err = time.Parse(time.RFC3339Nano, strings.Replace(s, " ", "+", 1))
	}
	if err != nil || len(s) > 64 {
		return time.Time{}, badParam(param, "%s is not an RFC 3339 time such as 2024-05-01T00:00:00Z or 2024-05-01T00:00:00-04:00", quoted(s))
	}
	if t.Year() < 1900 || t.Year() > 9000 {
		return time.Time{}, badParam(param, "%s is out of range (years 1900-9000)", quoted(s))
	}
	if tr := t.Truncate(time.Microsecond); !tr.Equal(t) {
		t = tr.Add(time.Microsecond)
	}
	return t.UTC(), nil
}

// pageSizeParam returns page_size, or def when absent.
func pageSizeParam(p params, def, maxSize int) (int, error) {
	if !p.has("page_size") {
		return def, nil
	}
	s := p.get("page_size")
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxSize {
		return 0, badParam("page_size", "%s: want an integer from 1 to %d", quoted(s), maxSize)
	}
	return n, nil
}

// identParam returns the parameter name validated as an identifier
// (checkIdent), or "" when it is absent.
func identParam(p params, name string) (string, error) {
	if !p.has(name) {
		return "", nil
	}
	v := p.get(name)
	if err := checkIdent(name, v); err != nil {
		return "", err
	}
	return v, nil
}

// boolParam returns the parameter name as true or false (false when it is
// absent).
func boolParam(p params, name string) (bool, error) {
	if !p.has(name) {
		return false, nil
	}
	v, err := strconv.ParseBool(p.get(name))
	if err != nil {
		return false, badParam(name, "%s: want true or false", quoted(p.get(name)))
	}
	return v, nil
}

// positiveInt parses s, the value of param, as a positive int64. When it is
// not one the error is a 400 naming param whose message is format with s,
// quoted, for its one %s.
func positiveInt(param, s, format string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, badParam(param, format, quoted(s))
	}
	return n, nil
}

// pathID returns the path parameter name (pathParam) as a positive int64
// (positiveInt with format).
func pathID(r *http.Request, name, format string) (int64, error) {
	s, err := pathParam(r, name)
	if err != nil {
		return 0, err
	}
	return positiveInt(name, s, format)
}

// pathParam returns the decoded path parameter name, validated as an
// identifier. chi matches on the raw path when the URL has escapes that
// change its meaning (%2F), and then returns the value still escaped.
func pathParam(r *http.Request, name string) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath != "" {
		u, err := url.PathUnescape(v)
		if err != nil {
			return "", badParam(name, "malformed escape in the path")
		}
		v = u
	}
	if err := checkIdent(name, v); err != nil {
		return "", err
	}
	return v, nil
}

package query

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	fp := fingerprint("1h", []string{"P-1", "P-2"}, []string{"flow"}, from, from.Add(time.Hour))
	cases := []cursor{
		{point: "P-1", variable: "flow", time: from.Add(123456 * time.Microsecond), query: fp},
		{point: "ñandú☃", variable: "x", time: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), query: fp},
		{point: strings.Repeat("p", maxIdentLen), variable: strings.Repeat("v", 64), time: time.Date(9000, 12, 31, 0, 0, 0, 0, time.UTC), query: fp},
	}
	for _, c := range cases {
		s := c.encode()
		require.NotContains(t, s, "=", "unpadded")
		require.NotContains(t, s, "+")
		require.NotContains(t, s, "/")
		got, err := decodeCursor(s, fp)
		require.NoError(t, err)
		require.Equal(t, c.point, got.point)
		require.Equal(t, c.variable, got.variable)
		require.True(t, c.time.Equal(got.time))
	}
	other := fingerprint("1h", []string{"P-1"}, []string{"flow"}, from, from.Add(time.Hour))
	_, err := decodeCursor(cases[0].encode(), other)
	requireParam(t, err, "cursor")
}

func TestCursorRejectsGarbage(t *testing.T) {
	t.Parallel()
	fp := fingerprint("", []string{"P"}, nil, time.Unix(0, 0), time.Unix(60, 0))
	valid := cursor{point: "P", variable: "flow", time: time.Unix(1, 0), query: fp}.encode()
	for _, s := range []string{"", "x", "AAAA", "!!!!", strings.Repeat("A", 2000), valid[:len(valid)-2], valid + "AA",
		"Ag" + valid[2:]} {
		_, err := decodeCursor(s, fp)
		requireParam(t, err, "cursor")
	}
}

// FuzzDecodeCursor: no input panics, and anything accepted re-encodes to
// itself.
func FuzzDecodeCursor(f *testing.F) {
	fp := fingerprint("", []string{"P"}, nil, time.Unix(0, 0), time.Unix(60, 0))
	f.Add(cursor{point: "P", variable: "flow", time: time.Unix(1, 0), query: fp}.encode())
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCursor(s, fp)
		if err != nil {
			return
		}
		again, err := decodeCursor(c.encode(), fp)
		require.NoError(t, err)
		require.Equal(t, c.point, again.point)
		require.Equal(t, c.variable, again.variable)
	})
}

func requireParam(t *testing.T, err error, param string) {
	t.Helper()
	var e *Error
	require.True(t, errors.As(err, &e), "%v", err)
	require.Equal(t, param, e.Param)
	require.GreaterOrEqual(t, e.Status, 400)
	require.Less(t, e.Status, 500)
}

func TestNegotiate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		accept string
		want   string // "" is 406
	}{
		{"", MediaJSON},
		{"*/*", MediaJSON},
		{"application/json", MediaJSON},
		{"text/csv", MediaCSV},
		{"application/vnd.apache.arrow.stream", MediaArrow},
		{"text/csv;q=0.5, application/vnd.apache.arrow.stream", MediaArrow},
		{"text/*", MediaCSV},
		{"application/*;q=0.9, text/csv;q=0.8", MediaJSON},
		{"application/json;q=0, */*", MediaCSV},
		{"TEXT/CSV; charset=utf-8", MediaCSV},
		{"text/html", ""},
		{"application/xml, text/html;q=0.9", ""},
		{"application/json;q=0", ""},
		{"garbage", ""},
		{"*/csv", ""},
		{"text/csv;q=2", ""},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if c.accept != "" {
			r.Header.Set("Accept", c.accept)
		}
		got, err := negotiate(r, tabular)
		if c.want == "" {
			requireParam(t, err, "Accept")
			continue
		}
		require.NoError(t, err, c.accept)
		require.Equal(t, c.want, got, c.accept)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Accept", "text/csv")
	_, err := negotiate(r, jsonOnly)
	requireParam(t, err, "Accept")
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Time{
		"2025-05-01T00:00:00Z":                time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC),
		"2025-05-01T00:00:00-04:00":           time.Date(2025, 5, 1, 4, 0, 0, 0, time.UTC),
		"2025-05-01T00:00:00 04:00":           time.Date(2025, 4, 30, 20, 0, 0, 0, time.UTC),
		"2025-05-01T00:00:00.000001Z":         time.Date(2025, 5, 1, 0, 0, 0, 1000, time.UTC),
		"2025-05-01T00:00:00.0000001Z":        time.Date(2025, 5, 1, 0, 0, 0, 1000, time.UTC), // rounded up to the microsecond
		"2025-05-01T00:00:00.999999999+00:00": time.Date(2025, 5, 1, 0, 0, 1, 0, time.UTC),
	} {
		got, err := parseTime("from", in)
		require.NoError(t, err, in)
		require.True(t, want.Equal(got), "%s: got %s want %s", in, got, want)
	}
	for _, in := range []string{"", "2025-05-01", "yesterday", "1700000000", "0001-01-01T00:00:00Z", "2025-13-01T00:00:00Z"} {
		_, err := parseTime("from", in)
		requireParam(t, err, "from")
	}
}

func TestAppendJSONString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "P-1", `a"b\c`, "\x00\x01\x1f\x7f", "ñandú☃𝄞", "\u2028\u2029", "\xff\xfe", "a\xc3", "</script>"} {
		b := appendJSONString(nil, s)
		require.True(t, json.Valid(b), "%q -> %s", s, b)
		var back string
		require.NoError(t, json.Unmarshal(b, &back))
		want := strings.ToValidUTF8(s, "\ufffd")
		if s == "\xff\xfe" {
			want = "\ufffd\ufffd"
		}
		require.Equal(t, want, back, "%q", s)
	}
}

func TestQuoted(t *testing.T) {
	t.Parallel()
	require.Equal(t, `"P-1"`, quoted("P-1"))
	require.Equal(t, `"\x00"`, quoted("\x00"))
	long := quoted(strings.Repeat("ñ", 100))
	require.True(t, strings.HasSuffix(long, `…"`))
	require.LessOrEqual(t, len(long), 64+len(`"…"`))
	require.Equal(t, `"\u202e"`, quoted("\u202e"))
}

func TestAppendCSVField(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "P-1", "a,b", `say "hi"`, "two\nlines", "cr\rhere", " lead", "\ttab", `\.`, "ñandú☃"} {
		line := append(appendCSVField(nil, s), ',')
		line = append(appendCSVField(line, "x"), '\n')
		recs, err := csv.NewReader(bytes.NewReader(line)).ReadAll()
		require.NoError(t, err, "%q", line)
		require.Equal(t, [][]string{{s, "x"}}, recs, "%q", line)
	}
}

func TestCSVNeutralizesFormulas(t *testing.T) {
	for in, want := range map[string]string{
		"=HYPERLINK(\"x\")": "'=HYPERLINK(\"x\")",
		"+1":                "'+1",
		"-cmd":              "'-cmd",
		"@SUM(A1)":          "'@SUM(A1)",
		"\tx":               "'\tx",
		"P-001":             "P-001",
		"":                  "",
	} {
		if got := neutralizeFormula(in); got != want {
			t.Errorf("neutralizeFormula(%q) = %q, want %q", in, got, want)
		}
	}
}

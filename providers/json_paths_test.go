package providers

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"
)

// pathSetDocs are documents whose every tricky case the one-pass lookup
// must resolve as gjson.Get does.
var pathSetDocs = []string{
	`{"device_id":"gen-00001","ts":"2026-11-26T21:00:00.123Z","flow_lps":12.5,"totalizer_m3":1234.567,"level_m":9.85}`,
	`{"gateway":{"serial":"GW-01"},"device":{"serial":"acme-00002","model":"FM-300"},"time":1764190800123,"registers":[{"id":"Q","value":45,"unit":"m3/h"}]}`,
	`{"a":1,"a":2,"b":{"c":1},"b":{"c":2,"d":3}}`,                          // the first member wins; a nested path looks into later ones
	`{"b":{"x":1},"b":"str","b":[{"c":5}],"b":{"c":2}}`,                    // an array on the way: gjson's business
	`{"b":5,"b":{"c":"found"}}`,                                            // a scalar on the way is passed over
	`{"fl\u006fw_lps":1,"flow_lps":2,"k\"ey":{"x":"\u00e9\n"}}`,            // escaped keys and values
	`  {"a" : [ 1 , {"b":"}"} ] , "c" :	"x\\" , "d" : null , "e" : true }`, // spaces, brackets in strings
	`{"a":{},"b":[],"c":"","d":-0.0e-5,"e":false}`,
	`{"0":"zero","a":{"0":"nested zero"}}`,
	`["a",{"a":1}]`,
	`"x{\"a\":1}"`,
	`12`,
	`null`,
	`{}`,
	`{"ñandú":{"presión":7}}`,
	`{"a":{"b":{"c":{"d":1}}},"a":{"b":{"c":{"e":2}}}}`,
}

var pathSetPaths = []string{"a", "b", "b.c", "b.d", "c", "d", "e", "flow_lps", "device_id", "ts", "device.serial",
	"registers", "time", "k\\\"ey.x", "0", "a.0", "a.b", "a.b.c.d", "a.b.c.e", "ñandú.presión", "missing", "a.missing.deeper", "a.*", "#", "@this"}

// requireMatchesGet requires lookup (for valid JSON) and validLookup to
// give what gjson.Valid and gjson.Get give.
func requireMatchesGet(t *testing.T, doc string, paths []string) {
	t.Helper()
	ps := newPathSet(paths...)
	vals := make([]jsonValue, ps.len())
	valid := gjson.Valid(doc)
	require.Equal(t, valid, ps.validLookup(doc, vals), "valid: %s", doc)
	if !valid {
		return
	}
	for _, p := range paths {
		require.Equal(t, fromResult(gjson.Get(doc, p)), vals[ps.add(p)], "validLookup: doc %s path %q", doc, p)
	}
	ps.lookup(doc, vals)
	for _, p := range paths {
		require.Equal(t, fromResult(gjson.Get(doc, p)), vals[ps.add(p)], "lookup: doc %s path %q", doc, p)
	}
}

func TestPathSetMatchesGet(t *testing.T) {
	for _, doc := range pathSetDocs {
		require.True(t, gjson.Valid(doc), doc)
		for _, p := range pathSetPaths {
			requireMatchesGet(t, doc, []string{p})
		}
		requireMatchesGet(t, doc, pathSetPaths)
		simple := []string{}
		for _, p := range pathSetPaths {
			if simplePath(p) {
				simple = append(simple, p)
			}
		}
		requireMatchesGet(t, doc, simple)
	}
}

func TestValidLookupValidatesAsGjson(t *testing.T) {
	for _, doc := range []string{"", " ", "{", "}", "{}", " {} ", "{} {}", `{"a"}`, `{"a":}`, `{"a":1,}`, `{,"a":1}`, `{"a":1 "b":2}`,
		"[", "[]", "[1,]", "[,1]", "[1 2]", `"`, `"a`, `"\x"`, `"\u12"`, `"\u12g4"`, `"\u1234"`, "\"\x01\"", "\"\x7f\xff\"",
		"-", "-a", "01", "1.", "1.e5", "1e", "1e+", "1E-7", "-0.0", "+1", ".5", "tru", "true", "truex", "nul", "null", "fals", "false",
		`{"a":[{"b":[1,{"c":"d"}]}],"e":{"f":{}}}`, "\t\n\r{\"a\"\t:\r1}\n", "{\"a\":1}\x00"} {
		requireMatchesGet(t, doc, []string{"a", "a.b", "e.f"})
	}
}

func TestSimplePath(t *testing.T) {
	for _, p := range []string{"a", "flow_lps", "device.serial", "a-b.c_d", "x1.2y", "ñandú"} {
		require.True(t, simplePath(p), p)
	}
	for _, p := range []string{"", "a.", ".a", "a..b", "0", "a.0", "a.*", "a?", "#", "a.#", "@this", "a|b", `a\.b`, "!true", "a b", "a.[b]"} {
		require.False(t, simplePath(p), p)
	}
}

func TestArrayIterMatchesForEach(t *testing.T) {
	for _, doc := range []string{`[]`, `[ ]`, `[1]`, `[ 1 , "a,]" , {"b":[2,3]} , [ ] , null ]`, `[{"id":"Q","value":45},{"id":"VOL"}]`} {
		var want []string
		gjson.Parse(doc).ForEach(func(_, v gjson.Result) bool {
			want = append(want, v.Raw)
			return true
		})
		var got []string
		it := arrayIter{s: doc, i: 1}
		for raw, ok := it.next(); ok; raw, ok = it.next() {
			got = append(got, raw)
		}
		require.Equal(t, want, got, doc)
	}
}

// FuzzPathSet compares the one-pass lookups with gjson.Valid and gjson.Get
// on arbitrary documents and paths (comma-separated).
//
//	go test ./providers -run '^$' -fuzz FuzzPathSet -fuzztime 20s
func FuzzPathSet(f *testing.F) {
	for _, doc := range pathSetDocs {
		f.Add(doc, strings.Join(pathSetPaths[:12], ","))
		f.Add(doc, "a,b.c,a.b.c.d")
	}
	f.Fuzz(func(t *testing.T, doc, paths string) {
		ps := strings.Split(paths, ",")
		if len(ps) > 16 {
			ps = ps[:16]
		}
		requireMatchesGet(t, doc, ps)
		if !gjson.Valid(doc) {
			return
		}
		if r := gjson.Parse(doc); r.IsArray() {
			var want []string
			r.ForEach(func(_, v gjson.Result) bool {
				want = append(want, v.Raw)
				return true
			})
			var got []string
			it := arrayIter{s: r.Raw, i: 1}
			for raw, ok := it.next(); ok; raw, ok = it.next() {
				got = append(got, raw)
			}
			require.Equal(t, want, got, doc)
		}
	})
}

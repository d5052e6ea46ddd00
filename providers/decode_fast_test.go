package providers

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"
)

// FuzzParseUnix compares parseUnix, whose plain digit strings take
// parseDigits, with the general path it skips (strconv.ParseInt).
//
//	go test ./providers -run '^$' -fuzz FuzzParseUnix -fuzztime 20s
func FuzzParseUnix(f *testing.F) {
	for _, s := range []string{"0", "1764190800123", "000123", "999999999999999999", "9999999999999999999", "-5", "+5", "1.5", "1e3", "", "12a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := parseDigits(s)
		want, err := strconv.ParseInt(s, 10, 64)
		allDigits := s != ""
		for i := 0; i < len(s); i++ {
			allDigits = allDigits && s[i] >= '0' && s[i] <= '9'
		}
		if ok {
			require.NoError(t, err, s)
			require.Equal(t, want, n, s)
		} else {
			require.False(t, allDigits && len(s) <= 18, "%q not parsed", s)
		}
		for _, unit := range []time.Duration{time.Second, time.Millisecond, time.Microsecond} {
			got, gotErr := parseUnix(s, unit)
			if !ok || err != nil {
				continue
			}
			perSec := want / int64(time.Second/unit)
			require.NoError(t, gotErr, s)
			require.Equal(t, time.Unix(perSec, want%int64(time.Second/unit)*int64(unit)), got, s)
		}
	})
}

// TestUnitReaderMatchesQuantity reads units, hits and misses, from many
// goroutines at once and requires what quantity.unit gives.
func TestUnitReaderMatchesQuantity(t *testing.T) {
	spellings := []string{"m3/h", "m3/h", " m3/h", "L/s", "L/s ", "furlongs", "", "l/s", "m³/h", "M3/H"}
	for variable, q := range quantities {
		r := newUnitReader(q)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 200 {
					u := spellings[(g+i)%len(spellings)]
					got, err := r.unit(variable, u)
					want, wantErr := q.unit(variable, u)
					if wantErr != nil {
						assert.EqualError(t, err, wantErr.Error())
						continue
					}
					assert.NoError(t, err)
					assert.Equal(t, want, *got, "%s %q", variable, u)
				}
			})
		}
		wg.Wait()
	}
}

// FuzzPathSetWithin compares a path set marked within (as lorawanPaths)
// with what it stands for: gjson.Get for the other paths, and a lookup in
// the value of the path marked for the paths under it.
//
//	go test ./providers -run '^$' -fuzz FuzzPathSetWithin -fuzztime 20s
func FuzzPathSetWithin(f *testing.F) {
	for _, doc := range pathSetDocs {
		f.Add(doc)
	}
	f.Add(`{"a":{"b":1},"a":{"b":2,"c":3},"d":{"e":4}}`)
	f.Add(`{"a":1,"a":{"b":2,"c":3}}`)
	f.Add(`{"a":{"b":1,"c":{"x":[1]}},"a":[1],"d":[{"e":1}]}`)
	f.Fuzz(func(t *testing.T, doc string) {
		ps := newPathSet("a", "a.b", "a.c", "d.e")
		ps.within("a")
		vals := make([]jsonValue, ps.len())
		valid, scanned := ps.validLookupScanned(doc, vals, nil)
		require.Equal(t, gjson.Valid(doc), valid, doc)
		if !valid {
			return
		}
		require.Equal(t, fromResult(gjson.Get(doc, "a")), vals[0], doc)
		require.Equal(t, fromResult(gjson.Get(doc, "d.e")), vals[3], doc)
		if !scanned {
			return
		}
		want := make([]jsonValue, 2)
		if vals[0].isObject() {
			newPathSet("b", "c").lookup(vals[0].raw, want)
		}
		require.Equal(t, want, vals[1:3], doc)
	})
}

// TestStrWords holds scanner.str, whose fast loop reads 8 bytes at a
// time, to strPlain byte by byte: every byte value at every position of a
// string of plain bytes (ASCII and not), with a second byte at every
// position.
func TestStrWords(t *testing.T) {
	// want is where str stops: just past the closing quote, or at the
	// first byte that is not plain and not a quote (it fails there or,
	// for a backslash, goes on: compare only plain runs).
	want := func(b []byte) int {
		for i, c := range b {
			if !strPlain[c] {
				return i
			}
		}
		return len(b)
	}
	for _, fill := range []byte{'a', ' ', 0x7f, 0x80, 0xff, '!', '#', '[', ']'} {
		for pos := range 9 {
			for c := range 256 {
				for pos2 := range 9 {
					for _, c2 := range []byte{fill, 0, 0x1f, '"', '\\', 0x80, 0xa2, 0xdc} {
						b := make([]byte, 18)
						for i := range b {
							b[i] = fill
						}
						b[pos2] = c2
						b[pos] = byte(c)
						b[17] = '"'
						stop := want(b)
						sc := scanner{s: string(b)}
						i, ok := sc.str(0)
						switch {
						case b[stop] == '"':
							require.True(t, ok, "%q", b)
							require.Equal(t, stop+1, i, "%q", b)
						case b[stop] < ' ':
							require.False(t, ok, "%q", b)
							require.Equal(t, stop, i, "%q", b)
						default: // a backslash: an escape, valid or not
							require.True(t, sc.esc || !ok, "%q", b)
						}
					}
				}
			}
		}
	}
}

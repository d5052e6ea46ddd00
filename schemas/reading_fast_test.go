package schemas_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/schemas"
)

// writeValEncoding is what hamba/avro's reflective encoder writes for r with
// reading.avsc: the reference the codec's hand-ordered Reading encoder must
// match byte for byte.
func writeValEncoding(t testing.TB) func(t testing.TB, r *schemas.Reading) []byte {
	t.Helper()
	text, err := schemas.Schema("reading")
	require.NoError(t, err)
	schema, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	require.NoError(t, err)
	api := avro.Config{TagKey: "avro"}.Freeze()
	return func(t testing.TB, r *schemas.Reading) []byte {
		t.Helper()
		b, err := api.Marshal(schema, r)
		require.NoError(t, err)
		return b
	}
}

func TestReadingFastPathMatchesWriteVal(t *testing.T) {
	want := writeValEncoding(t)
	c := readingCodec(t, noRegistry)
	santiago := time.FixedZone("CLT", -3*3600)
	long := strings.Repeat("ñ", 200) // a multi-byte length prefix
	tests := []struct {
		name   string
		modify func(*schemas.Reading)
	}{
		{"full", func(*schemas.Reading) {}},
		{"null optionals", func(r *schemas.Reading) { *r = nullReading() }},
		{"only raw_value", func(r *schemas.Reading) { r.RawUnit = nil }},
		{"only raw_unit", func(r *schemas.Reading) { r.RawValue = nil }},
		{"zero record but the point", func(r *schemas.Reading) { *r = schemas.Reading{Point: "p"} }},
		{"empty raw_unit", func(r *schemas.Reading) { r.RawUnit = ptr("") }},
		{"nanoseconds truncated", func(r *schemas.Reading) { r.Time = time.Unix(1_764_190_800, 999_999_999) }},
		{"before the epoch", func(r *schemas.Reading) { r.Time = time.Unix(-86_401, 123_456_789) }},
		{"another zone", func(r *schemas.Reading) { r.ReceivedAt = time.Date(2026, 11, 26, 18, 0, 0, 1500, santiago) }},
		{"monotonic clock reading", func(r *schemas.Reading) { r.ReceivedAt = time.Now() }},
		{"far times", func(r *schemas.Reading) {
			r.Time = time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC)
			r.ReceivedAt = time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
		}},
		{"special floats", func(r *schemas.Reading) { r.Value, r.RawValue = math.NaN(), ptr(math.Inf(-1)) }},
		{"negative zero", func(r *schemas.Reading) { r.Value, r.RawValue = math.Copysign(0, -1), ptr(math.SmallestNonzeroFloat64) }},
		{"extreme quality", func(r *schemas.Reading) { r.Quality = math.MinInt32 }},
		{"max quality", func(r *schemas.Reading) { r.Quality = math.MaxInt32 }},
		{"long strings", func(r *schemas.Reading) { r.Point, r.Source, r.RawUnit = long, long+"x", ptr(long) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := fullReading()
			tc.modify(&r)
			got, err := c.Encode(&r)
			require.NoError(t, err)
			require.Equal(t, want(t, &r), got)
		})
	}
}

// FuzzReadingFastPath compares the codec's Reading encoder with WriteVal on
// arbitrary field values.
//
//	go test ./schemas -run '^$' -fuzz FuzzReadingFastPath -fuzztime 20s
func FuzzReadingFastPath(f *testing.F) {
	want := writeValEncoding(f)
	c := readingCodec(f, noRegistry)
	f.Add("OB-1", "dev", "flow", int64(1_764_190_800), int64(123_456_789), 12.5, "L/s", int32(5), true, 45.0, true, "m3/h", "generic-json", int64(-1), int64(1), "telemetry.raw/3/1")
	f.Add("P", "", "", int64(0), int64(0), 0.0, "", int32(0), false, 0.0, false, "", "", int64(0), int64(0), "")
	f.Fuzz(func(t *testing.T, point, device, variable string, sec, nsec int64, value float64, unit string, quality int32,
		hasRaw bool, raw float64, hasRawUnit bool, rawUnit, provider string, rsec, rnsec int64, source string) {
		if point == "" {
			return // refused by both, tested elsewhere
		}
		r := schemas.Reading{Point: point, Device: device, Variable: variable, Time: time.Unix(sec, nsec),
			Value: value, Unit: unit, Quality: quality, Provider: provider, ReceivedAt: time.Unix(rsec, rnsec), Source: source}
		if hasRaw {
			r.RawValue = &raw
		}
		if hasRawUnit {
			r.RawUnit = &rawUnit
		}
		got, err := c.Encode(&r)
		require.NoError(t, err)
		w := want(t, &r)
		require.Equal(t, w, got)
		appended, err := c.AppendEncode([]byte("prefix"), &r)
		require.NoError(t, err)
		require.Equal(t, append([]byte("prefix"), w...), appended)
	})
}

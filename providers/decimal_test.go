package providers

import (
	"math"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireFloatMatchesParseFloat requires decimal.float, wherever it
// answers, to give strconv.ParseFloat's float64 bit for bit.
func requireFloatMatchesParseFloat(t *testing.T, s string) {
	t.Helper()
	if !isDecimal(s) {
		return
	}
	d, exact := parseDecimal(s)
	if !exact {
		return
	}
	got, ok := d.float()
	if !ok {
		return
	}
	want, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, s)
	require.Equal(t, math.Float64bits(want), math.Float64bits(got), "%q: %g, ParseFloat says %g", s, got, want)
}

func TestDecimalFloatMatchesParseFloat(t *testing.T) {
	for _, s := range []string{"0", "-0", "0.0", "-0.0e-5", "00012.5000", "12.5", "1234.567", "9.85", "-3.25", "0.1", "0.3",
		"9007199254740992", "9007199254740993", "9007199254740991.5", "1e22", "1e23", "1e-22", "1.7976931348623157e308",
		"123456789012345678", "4.9e-324", "+7", ".5", "5.", "1E5", "2.2250738585072014e-308", "3.141592653589793", "1764190800.25"} {
		requireFloatMatchesParseFloat(t, s)
	}
	d, _ := parseDecimal("12.5")
	f, ok := d.float()
	require.True(t, ok)
	require.Equal(t, 12.5, f)
}

// FuzzDecimalFloat holds the fast decimal-to-float64 path to
// strconv.ParseFloat.
//
//	go test ./providers -run '^$' -fuzz FuzzDecimalFloat -fuzztime 20s
func FuzzDecimalFloat(f *testing.F) {
	for _, s := range []string{"12.5", "-0.001", "1234567", "9007199254740993", "1e22", "0.30000000000000004"} {
		f.Add(s)
	}
	f.Add("1e-7")
	f.Fuzz(requireFloatMatchesParseFloat)
}

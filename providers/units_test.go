package providers_test

import (
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/providers"
)

func TestConvert(t *testing.T) {
	cases := []struct {
		name      string
		variable  string
		unit      string
		in        float64
		want      float64
		wantUnit  string
		wantError error
	}{
		{"flow canonical", "flow", "L/s", 12.5, 12.5, "L/s", nil},
		{"flow lps", "flow", "lps", 3, 3, "L/s", nil},
		{"flow mL/s", "flow", "mL/s", 12500, 12.5, "L/s", nil},
		{"flow L/min", "flow", "L/min", 90, 1.5, "L/s", nil},
		{"flow lpm", "flow", "lpm", 60, 1, "L/s", nil},
		{"flow L/h", "flow", "l/h", 36, 0.01, "L/s", nil},
		{"flow m3/s", "flow", "m3/s", 0.0125, 12.5, "L/s", nil},
		{"flow m3/min", "flow", "m³/min", 3, 50, "L/s", nil},
		{"flow m3/h", "flow", "m3/h", 45, 12.5, "L/s", nil},
		{"flow m3/h decimal", "flow", "m3/h", 55.116, 15.31, "L/s", nil},
		{"flow m³/h", "flow", "m³/h", 36, 10, "L/s", nil},
		{"flow m3/d", "flow", "m3/d", 86.4, 1, "L/s", nil},
		{"flow ML/d", "flow", "ML/d", 8.64, 100, "L/s", nil},
		{"flow gpm", "flow", "gpm", 120, 7.570823568, "L/s", nil},
		{"flow gal/min", "flow", "gal/min", 1, 3.785411784 / 60, "L/s", nil},
		{"flow gal/h", "flow", "gal/h", 3600, 3.785411784, "L/s", nil},
		{"totalizer L", "totalizer", "L", 1234567, 1234.567, "m3", nil},
		{"totalizer l", "totalizer", "l", 1, 0.001, "m3", nil},
		{"totalizer mL", "totalizer", "mL", 2500, 0.0025, "m3", nil},
		{"totalizer kL", "totalizer", "kL", 7.5, 7.5, "m3", nil},
		{"totalizer ML", "totalizer", "ML", 1.5, 1500, "m3", nil},
		{"totalizer gal", "totalizer", "gal", 1000, 3.785411784, "m3", nil},
		{"totalizer kgal", "totalizer", "kgal", 2, 7.570823568, "m3", nil},
		{"totalizer ft3", "totalizer", "ft3", 1000, 28.316846592, "m3", nil},
		{"totalizer acre-ft", "totalizer", "acre-ft", 2.5, 3083.7045938688, "m3", nil},
		{"level cm", "level", "cm", 985, 9.85, "m", nil},
		{"level cm decimal", "level", "cm", 98.57, 0.9857, "m", nil},
		{"level mm", "level", "mm", 9850, 9.85, "m", nil},
		{"level ft", "level", "ft", 10, 3.048, "m", nil},
		{"level in", "level", "in", 12, 0.3048, "m", nil},
		{"pressure bar", "pressure", "bar", 1.01325, 101.325, "kPa", nil},
		{"pressure mbar", "pressure", "mbar", 1013.2, 101.32, "kPa", nil},
		{"pressure Pa", "pressure", "Pa", 101325, 101.325, "kPa", nil},
		{"pressure psi", "pressure", "psi", 1, 6.894757293168361, "kPa", nil},
		{"pressure mca", "pressure", "mca", 10, 98.0665, "kPa", nil},
		{"pressure mH2O", "pressure", "mH2O", 1, 9.80665, "kPa", nil},
		{"temperature K", "temperature", "K", 293.15, 20, "Cel", nil},
		{"temperature °F", "temperature", "°F", 68, 20, "Cel", nil},
		{"temperature F below zero", "temperature", "F", -40, -40, "Cel", nil},
		{"temperature degC", "temperature", "degC", 18.5, 18.5, "Cel", nil},
		{"conductivity mS/cm", "conductivity", "mS/cm", 1.45, 1450, "uS/cm", nil},
		{"conductivity µS/cm", "conductivity", "µS/cm", 1450, 1450, "uS/cm", nil},
		{"battery mV", "battery", "mV", 3301, 3.301, "V", nil},
		{"ph unitless", "ph", "", 7.2, 7.2, "pH", nil},
		{"ph pH", "ph", "pH", 6.9, 6.9, "pH", nil},
		{"spaces trimmed", "flow", " L/s ", 1, 1, "L/s", nil},
		{"zero", "level", "cm", 0, 0, "m", nil},
		{"negative", "flow", "m3/h", -3.6, -1, "L/s", nil},
		{"megalitre is not millilitre", "totalizer", "mL", 1, 0.000001, "m3", nil},
		{"case matters", "totalizer", "ml", 1, 0, "", providers.ErrUnknownUnit},
		{"unknown unit", "level", "furlongs", 1, 0, "", providers.ErrUnknownUnit},
		{"unit of another variable", "flow", "m", 1, 0, "", providers.ErrUnknownUnit},
		{"unknown variable", "flw", "L/s", 1, 0, "", providers.ErrUnknownVariable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, unit, err := providers.Convert(c.variable, c.unit, c.in)
			if c.wantError != nil {
				require.ErrorIs(t, err, c.wantError)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.wantUnit, unit)
			require.Equal(t, c.want, got) // exact: the nearest float64
		})
	}
}

// exactFactors are the unit definitions, written independently of the
// implementation: canonical = (v + offset) × factor.
var exactFactors = []struct {
	variable, unit, factor, offset string
}{
	{"flow", "L/s", "1", "0"}, {"flow", "l/s", "1", "0"}, {"flow", "lps", "1", "0"}, {"flow", "mL/s", "1/1000", "0"},
	{"flow", "L/min", "1/60", "0"}, {"flow", "l/min", "1/60", "0"}, {"flow", "lpm", "1/60", "0"},
	{"flow", "L/h", "1/3600", "0"}, {"flow", "l/h", "1/3600", "0"},
	{"flow", "m3/s", "1000", "0"}, {"flow", "m³/s", "1000", "0"}, {"flow", "m3/min", "1000/60", "0"}, {"flow", "m³/min", "1000/60", "0"},
	{"flow", "m3/h", "1000/3600", "0"}, {"flow", "m³/h", "1000/3600", "0"}, {"flow", "m3/d", "1000/86400", "0"}, {"flow", "m³/d", "1000/86400", "0"},
	{"flow", "ML/d", "1000000/86400", "0"},
	{"flow", "gal/min", "3.785411784/60", "0"}, {"flow", "gpm", "3.785411784/60", "0"}, {"flow", "gal/h", "3.785411784/3600", "0"},
	{"totalizer", "m3", "1", "0"}, {"totalizer", "m³", "1", "0"}, {"totalizer", "L", "1/1000", "0"}, {"totalizer", "l", "1/1000", "0"},
	{"totalizer", "mL", "1/1000000", "0"}, {"totalizer", "kL", "1", "0"}, {"totalizer", "ML", "1000", "0"},
	{"totalizer", "gal", "0.003785411784", "0"}, {"totalizer", "kgal", "3.785411784", "0"},
	{"totalizer", "ft3", "0.028316846592", "0"}, {"totalizer", "acre-ft", "1233.48183754752", "0"},
	{"level", "m", "1", "0"}, {"level", "cm", "1/100", "0"}, {"level", "mm", "1/1000", "0"}, {"level", "ft", "0.3048", "0"}, {"level", "in", "0.0254", "0"},
	{"pressure", "kPa", "1", "0"}, {"pressure", "Pa", "1/1000", "0"}, {"pressure", "bar", "100", "0"}, {"pressure", "mbar", "1/10", "0"},
	// 1 psi = 0.45359237 kg × 9.80665 m/s² / (0.0254 m)², in kPa.
	{"pressure", "psi", "4.4482216152605/0.64516", "0"},
	{"pressure", "mca", "9.80665", "0"}, {"pressure", "mH2O", "9.80665", "0"},
	{"temperature", "Cel", "1", "0"}, {"temperature", "°C", "1", "0"}, {"temperature", "C", "1", "0"}, {"temperature", "degC", "1", "0"},
	{"temperature", "K", "1", "-273.15"}, {"temperature", "°F", "5/9", "-32"}, {"temperature", "F", "5/9", "-32"}, {"temperature", "degF", "5/9", "-32"},
	{"conductivity", "uS/cm", "1", "0"}, {"conductivity", "µS/cm", "1", "0"}, {"conductivity", "μS/cm", "1", "0"}, {"conductivity", "mS/cm", "1000", "0"},
	{"battery", "V", "1", "0"}, {"battery", "mV", "1/1000", "0"},
	{"ph", "", "1", "0"}, {"ph", "pH", "1", "0"},
}

func rat(tb testing.TB, s string) *big.Rat {
	tb.Helper()
	r := new(big.Rat)
	if num, den, ok := cutSlash(s); ok {
		n, ok1 := new(big.Rat).SetString(num)
		d, ok2 := new(big.Rat).SetString(den)
		require.True(tb, ok1 && ok2, s)
		return r.Quo(n, d)
	}
	_, ok := r.SetString(s)
	require.True(tb, ok, s)
	return r
}

func cutSlash(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// TestConvertIsNearest checks every accepted unit against its definition:
// for values of up to 9 significant digits, Convert returns the float64
// nearest the exact conversion of the decimal the value is written as.
func TestConvertIsNearest(t *testing.T) {
	inputs := []string{"0", "1", "-1", "7", "12.5", "98.57", "0.001", "45", "55.116", "1234567", "4294967295",
		"2147483.647", "0.1", "0.3", "123456.789", "-40", "293.15", "99999.9999", "1e-5", "3.14159"}
	tested := map[string]bool{}
	for _, f := range exactFactors {
		tested[f.variable+" "+f.unit] = true
		factor, offset := rat(t, f.factor), rat(t, f.offset)
		for _, in := range inputs {
			v, err := strconv.ParseFloat(in, 64)
			require.NoError(t, err)
			exact := new(big.Rat).Add(rat(t, in), offset)
			exact.Mul(exact, factor)
			want, _ := exact.Float64()
			got, _, err := providers.Convert(f.variable, f.unit, v)
			require.NoError(t, err)
			require.Equal(t, want, got, "%s %s of %s", in, f.unit, f.variable)
		}
	}
	// Every accepted unit has a definition above.
	for _, variable := range providers.Variables() {
		for _, unit := range providers.Units(variable) {
			require.True(t, tested[variable+" "+unit], "no exact definition for %s %q", variable, unit)
		}
	}
}

// TestConvertFallsBack covers values too long for the exact path: the
// result is still within a few units in the last place.
func TestConvertFallsBack(t *testing.T) {
	for _, v := range []float64{1.2345678901234567e300, 0.1234567890123456789, 1e-300, 9007199254740993} {
		got, _, err := providers.Convert("flow", "m3/h", v)
		require.NoError(t, err)
		require.InEpsilon(t, v/3.6, got, 1e-15)
	}
	got, _, err := providers.Convert("totalizer", "ML", math.MaxFloat64)
	require.NoError(t, err)
	require.True(t, math.IsInf(got, 1), "overflow is not checked by Convert")
}

func TestCatalog(t *testing.T) {
	require.Equal(t, []string{"battery", "conductivity", "flow", "level", "ph", "pressure", "temperature", "totalizer"}, providers.Variables())
	for _, c := range []struct{ variable, unit string }{
		{"flow", "L/s"}, {"totalizer", "m3"}, {"level", "m"}, {"pressure", "kPa"},
		{"temperature", "Cel"}, {"conductivity", "uS/cm"}, {"battery", "V"}, {"ph", "pH"},
	} {
		unit, ok := providers.CanonicalUnit(c.variable)
		require.True(t, ok, c.variable)
		require.Equal(t, c.unit, unit, c.variable)
		require.True(t, slices.Contains(providers.Units(c.variable), c.unit), "canonical unit %q is accepted", c.unit)
	}
	_, ok := providers.CanonicalUnit("flw")
	require.False(t, ok)
	require.Nil(t, providers.Units("flw"))
}

// TestConvertIsNearestRandom checks the same property on random values:
// exactly for what sensors send (up to 12 significant digits, up to 6
// decimals), within a few units in the last place for any other float64,
// where the exact path gives way to float64 arithmetic.
func TestConvertIsNearestRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 6))
	n := 2000
	if testing.Short() {
		n = 200
	}
	for _, f := range exactFactors {
		factor, offset := rat(t, f.factor), rat(t, f.offset)
		for i := range n {
			sensor := i%2 == 0
			var v float64
			if sensor {
				v = float64(rng.Int64N(1e12)) / math.Pow10(rng.IntN(7))
				if rng.IntN(4) == 0 {
					v = -v
				}
			} else {
				v = math.Float64frombits(rng.Uint64())
				if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e300 || math.Abs(v) < 1e-300 {
					v = rng.NormFloat64() * 1e6
				}
			}
			exact := new(big.Rat).Add(rat(t, strconv.FormatFloat(v, 'g', -1, 64)), offset)
			exact.Mul(exact, factor)
			want, _ := exact.Float64()
			got, _, err := providers.Convert(f.variable, f.unit, v)
			require.NoError(t, err)
			if sensor {
				require.Equal(t, want, got, "%v %s of %s", v, f.unit, f.variable)
			} else {
				require.InEpsilon(t, want, got, 4e-16, "%v %s of %s", v, f.unit, f.variable)
			}
		}
	}
}

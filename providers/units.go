package providers

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
)

// conversion maps a vendor unit to its variable's canonical unit:
// canonical = (v + offset) × num / den, with num and den integers in lowest
// terms. Applied to the decimal a payload wrote (see decimal), the result
// is rounded once, so a conversion whose factor is an exact decimal (cm to
// m, L to m3, gpm to L/s) gives the float64 nearest the exact value.
type conversion struct {
	num, den uint64
	offset   decimal
	// float64 forms, for values whose decimal does not fit convertExact
	fnum, fden, foffset float64
	unit                string // the accepted spelling, so RawUnit never aliases a payload
}

// ratio returns the conversion num/den in lowest terms.
func ratio(num, den uint64) conversion {
	g := gcd(num, den)
	return conversion{num: num / g, den: den / g, fnum: float64(num / g), fden: float64(den / g)}
}

// shifted returns c with an offset of ±mant × 10^exp added before the ratio.
func (c conversion) shifted(neg bool, mant uint64, exp int) conversion {
	c.offset = decimal{neg: neg, mant: mant, exp: exp}
	c.foffset = float64(mant) * math.Pow10(exp)
	if neg {
		c.foffset = -c.foffset
	}
	return c
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// apply converts a float64 value: (v + offset) × num / den in float64
// arithmetic. Prefer convert when the value's decimal is known.
func (c *conversion) apply(v float64) float64 {
	if c.foffset != 0 {
		v += c.foffset
	}
	r := v * c.fnum / c.fden
	if math.IsInf(r, 0) && !math.IsInf(v, 0) {
		r = v / c.fden * c.fnum // the product overflowed, maybe not the result
	}
	return r
}

// convert converts the value written as x, whose float64 is v: exactly
// rounded when x fits, else in float64 arithmetic.
func (c *conversion) convert(x decimal, v float64) float64 {
	if r, ok := c.convertExact(x); ok {
		return r
	}
	return c.apply(v)
}

// quantity is one canonical variable: its canonical unit and every unit
// accepted for it.
type quantity struct {
	canonical string
	units     map[string]conversion
	// refs holds the same conversions as units, each at a fixed address,
	// for unitReader's cache.
	refs map[string]*conversion
}

// Exact definitions of the non-metric units used below.
const (
	usGallonNL = 3_785_411_784 // one US gallon in nanolitres (3.785411784 L)
	ft3PicoM3  = 28_316_846_592
	acreFt     = 123_348_183_754_752 // one acre-foot in 1e-11 m³ (1233.48183754752 m³)
	// One pound-force per square inch in 1e-13 N over 6.4516e-4 m²:
	// 0.45359237 kg × 9.80665 m/s² / (0.0254 m)².
	psiNum = 44_482_216_152_605 // 4.4482216152605 N in 1e-13 N
)

var one = ratio(1, 1)

// quantities is the variable catalog. Unit spellings are matched exactly
// (after trimming surrounding spaces): "ML" is a megalitre, "mL" a
// millilitre.
var quantities = map[string]quantity{
	"flow": {canonical: "L/s", units: map[string]conversion{
		"L/s": one, "l/s": one, "lps": one,
		"mL/s":  ratio(1, 1000),
		"L/min": ratio(1, 60), "l/min": ratio(1, 60), "lpm": ratio(1, 60),
		"L/h": ratio(1, 3600), "l/h": ratio(1, 3600),
		"m3/s": ratio(1000, 1), "m³/s": ratio(1000, 1),
		"m3/min": ratio(1000, 60), "m³/min": ratio(1000, 60),
		"m3/h": ratio(1000, 3600), "m³/h": ratio(1000, 3600),
		"m3/d": ratio(1000, 86400), "m³/d": ratio(1000, 86400),
		"ML/d":    ratio(1_000_000, 86400),
		"gal/min": ratio(usGallonNL, 60*1_000_000_000), "gpm": ratio(usGallonNL, 60*1_000_000_000),
		"gal/h": ratio(usGallonNL, 3600*1_000_000_000),
	}},
	"totalizer": {canonical: "m3", units: map[string]conversion{
		"m3": one, "m³": one,
		"L": ratio(1, 1000), "l": ratio(1, 1000),
		"mL":      ratio(1, 1_000_000),
		"kL":      one,
		"ML":      ratio(1000, 1),
		"gal":     ratio(usGallonNL, 1_000_000_000_000),
		"kgal":    ratio(usGallonNL, 1_000_000_000),
		"ft3":     ratio(ft3PicoM3, 1_000_000_000_000),
		"acre-ft": ratio(acreFt, 100_000_000_000),
	}},
	"level": {canonical: "m", units: map[string]conversion{
		"m":  one,
		"cm": ratio(1, 100),
		"mm": ratio(1, 1000),
		"ft": ratio(3048, 10000),
		"in": ratio(254, 10000),
	}},
	"pressure": {canonical: "kPa", units: map[string]conversion{
		"kPa":  one,
		"Pa":   ratio(1, 1000),
		"bar":  ratio(100, 1),
		"mbar": ratio(1, 10),
		"psi":  ratio(psiNum, 64516*100_000_000), // N/(6.4516e-4 m²) in 1e-13 N -> kPa
		"mca":  ratio(980665, 100000),
		"mH2O": ratio(980665, 100000),
	}},
	"temperature": {canonical: "Cel", units: map[string]conversion{
		"Cel": one, "°C": one, "C": one, "degC": one,
		"K":  ratio(1, 1).shifted(true, 27315, -2),
		"°F": ratio(5, 9).shifted(true, 32, 0), "F": ratio(5, 9).shifted(true, 32, 0), "degF": ratio(5, 9).shifted(true, 32, 0),
	}},
	"conductivity": {canonical: "uS/cm", units: map[string]conversion{
		"uS/cm": one, "µS/cm": one, "μS/cm": one, // micro sign and Greek mu
		"mS/cm": ratio(1000, 1),
	}},
	"battery": {canonical: "V", units: map[string]conversion{
		"V":  one,
		"mV": ratio(1, 1000),
	}},
	"ph": {canonical: "pH", units: map[string]conversion{
		"": one, "pH": one,
	}},
}

func init() {
	for variable, q := range quantities {
		q.refs = make(map[string]*conversion, len(q.units))
		for name, c := range q.units {
			c.unit = name
			q.units[name] = c
			q.refs[name] = &c
		}
		quantities[variable] = q
	}
}

// Variables returns the canonical variable names, sorted.
func Variables() []string {
	out := make([]string, 0, len(quantities))
	for name := range quantities {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// CanonicalUnit returns the unit every reading of variable is stored in
// ("L/s" for flow, "m3" for totalizer, "m" for level) and whether variable
// is known.
func CanonicalUnit(variable string) (string, bool) {
	q, ok := quantities[variable]
	return q.canonical, ok
}

// Units returns the unit spellings accepted for variable, sorted; nil for an
// unknown variable.
func Units(variable string) []string {
	q, ok := quantities[variable]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(q.units))
	for u := range q.units {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// Convert converts v from unit to variable's canonical unit and returns the
// converted value with that unit. v is taken as the shortest decimal that
// reads back as it (98.57, not 98.569999999999993), and the result is the
// float64 nearest the exact conversion of that decimal whenever the
// integers involved fit in 53 bits (about 15 significant digits between
// value and factor); beyond that it is computed in float64 arithmetic.
// Surrounding spaces of unit are ignored; otherwise spellings are matched
// exactly ("ML" is a megalitre, "mL" a millilitre). An unknown variable
// returns an error wrapping ErrUnknownVariable, a unit not accepted for
// variable one wrapping ErrUnknownUnit. Convert does not check v: a NaN or
// infinite v, or a finite v whose conversion overflows, gives a non-finite
// value.
func Convert(variable, unit string, v float64) (value float64, canonicalUnit string, err error) {
	c, canonical, err := lookupUnit(variable, unit)
	if err != nil {
		return 0, "", err
	}
	if !finite(v) {
		return c.apply(v), canonical, nil
	}
	if x, ok := decimalOf(v); ok {
		return c.convert(x, v), canonical, nil
	}
	return c.apply(v), canonical, nil
}

func lookupUnit(variable, unit string) (conversion, string, error) {
	q, ok := quantities[variable]
	if !ok {
		return conversion{}, "", fmt.Errorf("%w %q", ErrUnknownVariable, variable)
	}
	c, err := q.unit(variable, unit)
	return c, q.canonical, err
}

// unit is lookupUnit for q, the quantity of variable: decoders that know
// the variable beforehand keep q and skip one map lookup per value.
func (q quantity) unit(variable, unit string) (conversion, error) {
	c, ok := q.units[unit]
	if !ok {
		if c, ok = q.units[strings.TrimSpace(unit)]; !ok {
			return conversion{}, fmt.Errorf("%w %q for %s", ErrUnknownUnit, unit, variable)
		}
	}
	return c, nil
}

// unitReader reads the units of one variable from payloads: it is
// quantity.unit remembering the last spelling matched as written, so that
// a provider writing the same unit every time skips the map lookup. It is
// safe for concurrent use (Decode runs on many goroutines): the cache is
// one atomic pointer to a conversion of q.refs, and a hit compares the
// spelling with that conversion's own (c.unit is its key in q.units), so
// a hit gives exactly what the map gives.
type unitReader struct {
	q    quantity
	last *atomic.Pointer[conversion] // nil when q is not set
}

func newUnitReader(q quantity) unitReader {
	return unitReader{q: q, last: new(atomic.Pointer[conversion])}
}

// unit is quantity.unit, returning the conversion in q.refs. It must not
// be modified.
func (r unitReader) unit(variable, unit string) (*conversion, error) {
	if r.last != nil {
		if c := r.last.Load(); c != nil && c.unit == unit {
			return c, nil
		}
	}
	c, ok := r.q.refs[unit]
	if !ok {
		if c, ok = r.q.refs[strings.TrimSpace(unit)]; !ok {
			_, err := r.q.unit(variable, unit) // the error
			return nil, err
		}
	} else if r.last != nil {
		r.last.Store(c) // a spelling as written: c.unit == unit
	}
	return c, nil
}

// finite reports whether v is neither NaN nor infinite.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

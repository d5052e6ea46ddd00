package providers

import (
	"math"
	"math/bits"
	"strconv"
)

// decimal is ±mant × 10^exp, the exact value of a number as written in a
// payload or a spec. Converting it with a conversion's integer ratio and
// rounding once gives the float64 nearest the exact result, which a
// float64 computation cannot: 98.57 cm is 0.9857 m exactly, while
// 98.57/100 in float64 is off by one unit in the last place.
type decimal struct {
	neg  bool
	mant uint64
	exp  int
}

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// parseDecimal parses a plain decimal number (see isDecimal) of at most 19
// significant digits; ok is false for anything else.
func parseDecimal(s string) (d decimal, ok bool) {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		d.neg = s[i] == '-'
		i++
	}
	digits, dot, sawDigit := 0, false, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			sawDigit = true
			if c == '0' && d.mant == 0 {
				if dot {
					d.exp--
				}
				continue // leading zeros are not significant
			}
			if digits == 19 {
				return decimal{}, false
			}
			d.mant = d.mant*10 + uint64(c-'0')
			digits++
			if dot {
				d.exp--
			}
		case c == '.' && !dot:
			dot = true
		case c == 'e' || c == 'E':
			e, err := strconv.Atoi(s[i+1:])
			if err != nil || e > 400 || e < -400 || !sawDigit {
				return decimal{}, false
			}
			d.exp += e
			return d, true
		default:
			return decimal{}, false
		}
	}
	return d, sawDigit
}

// exactPow10 are the powers of ten a float64 holds exactly.
var exactPow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// float returns the float64 nearest d, what strconv.ParseFloat gives for
// the text d was parsed from, when one multiplication or division of
// exact float64s gives it (Clinger's fast path: a mantissa of at most 53
// bits and a power of ten up to 1e22, so the one rounding is the only
// one); ok is false otherwise. Sensor values almost always qualify, and
// this skips strconv's general parser for them.
func (d decimal) float() (f float64, ok bool) {
	switch {
	case d.mant == 0:
		f = 0
	case d.mant > 1<<53 || d.exp < -22 || d.exp > 22:
		return 0, false
	case d.exp >= 0:
		f = float64(d.mant) * exactPow10[d.exp]
	default:
		f = float64(d.mant) / exactPow10[-d.exp]
	}
	if d.neg {
		f = -f
	}
	return f, true
}

// decimalOf returns the shortest decimal that reads back as v.
func decimalOf(v float64) (decimal, bool) {
	var buf [32]byte
	return parseDecimal(string(strconv.AppendFloat(buf[:0], v, 'g', -1, 64)))
}

// mulPow10 returns m × 10^k and whether it fits in a uint64.
func mulPow10(m uint64, k int) (uint64, bool) {
	if k < 0 || k >= len(pow10) {
		return 0, m == 0
	}
	hi, lo := bits.Mul64(m, pow10[k])
	return lo, hi == 0
}

// mul returns a × b exactly, if the mantissa fits.
func (a decimal) mul(b decimal) (decimal, bool) {
	hi, lo := bits.Mul64(a.mant, b.mant)
	return decimal{neg: a.neg != b.neg, mant: lo, exp: a.exp + b.exp}, hi == 0
}

// add returns a + b exactly, if the aligned mantissas fit.
func (a decimal) add(b decimal) (decimal, bool) {
	if a.exp < b.exp {
		a, b = b, a
	}
	// a has the larger exponent: bring it down to b's.
	am, ok := mulPow10(a.mant, a.exp-b.exp)
	if !ok {
		return decimal{}, false
	}
	d := decimal{exp: b.exp}
	switch {
	case a.neg == b.neg:
		s, carry := bits.Add64(am, b.mant, 0)
		if carry != 0 {
			return decimal{}, false
		}
		d.neg, d.mant = a.neg, s
	case am >= b.mant:
		d.neg, d.mant = a.neg, am-b.mant
	default:
		d.neg, d.mant = b.neg, b.mant-am
	}
	return d, true
}

// convertExact returns (x + c.offset) × c.num / c.den correctly rounded
// to a float64, and false when an intermediate does not fit: the offset
// sum in 64 bits, the numerator in 128, the denominator in 64.
func (c *conversion) convertExact(x decimal) (float64, bool) {
	if c.offset.mant != 0 {
		var ok bool
		if x, ok = x.add(c.offset); !ok {
			return 0, false
		}
	}
	if x.mant == 0 {
		return 0, true
	}
	nh, nl := bits.Mul64(x.mant, c.num)
	d := c.den
	var ok bool
	if x.exp >= 0 {
		for e := x.exp; e > 0; {
			k := min(e, len(pow10)-1)
			if nh, nl, ok = mul128(nh, nl, pow10[k]); !ok {
				return 0, false
			}
			e -= k
		}
	} else if d, ok = mulPow10(d, -x.exp); !ok {
		return 0, false
	}
	v := quo128(nh, nl, d)
	if x.neg {
		v = -v
	}
	return v, true
}

// mul128 returns (h, l) × m and whether it fits in 128 bits.
func mul128(h, l, m uint64) (uint64, uint64, bool) {
	hh, hl := bits.Mul64(h, m)
	lh, ll := bits.Mul64(l, m)
	sum, carry := bits.Add64(hl, lh, 0)
	return sum, ll, hh == 0 && carry == 0
}

// quo128 returns the float64 nearest (nh, nl) / d, rounding half to even;
// (nh, nl) must not be zero, nor d.
func quo128(nh, nl, d uint64) float64 {
	// Shift the numerator all the way up so the quotient has at least 64
	// significant bits: N × 2^s / d with N × 2^s ≥ 2^127 and d < 2^64.
	var s int
	if nh != 0 {
		s = bits.LeadingZeros64(nh)
	} else {
		s = 64 + bits.LeadingZeros64(nl)
	}
	nh, nl = shl128(nh, nl, s)
	qh, r := nh/d, nh%d
	ql, rem := bits.Div64(r, nl, d)
	// Keep 54 bits of the quotient: 53 and the half bit below them.
	length := 128 - bits.LeadingZeros64(qh)
	if qh == 0 {
		length = 64 - bits.LeadingZeros64(ql)
	}
	t := length - 54
	_, top := shr128(qh, ql, t)
	sticky := rem != 0 || lowBits128(qh, ql, t)
	m := top >> 1
	if top&1 == 1 && (sticky || m&1 == 1) {
		m++
	}
	return math.Ldexp(float64(m), t+1-s)
}

func shl128(h, l uint64, n int) (uint64, uint64) {
	switch {
	case n == 0:
		return h, l
	case n >= 64:
		return l << (n - 64), 0
	default:
		return h<<n | l>>(64-n), l << n
	}
}

func shr128(h, l uint64, n int) (uint64, uint64) {
	switch {
	case n == 0:
		return h, l
	case n >= 64:
		return 0, h >> (n - 64)
	default:
		return h >> n, l>>n | h<<(64-n)
	}
}

// lowBits128 reports whether any of the n lowest bits of (h, l) is set.
func lowBits128(h, l uint64, n int) bool {
	if n >= 64 {
		return l != 0 || h&(1<<(n-64)-1) != 0
	}
	return l&(1<<n-1) != 0
}

package providers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Decode decodes a JSON payload as the spec describes. It returns one
// reading per variable found, in spec order (register order for registers),
// or an error wrapping ErrBadPayload naming the field: the payload is not
// JSON, a required value is missing or null, a value is not a number (a
// JSON string holding a decimal number, such as "15.31", is accepted), a
// value is NaN or infinite before or after conversion, the time cannot be
// parsed or lies outside 1970-01-01..2262-04-11, a unit read from the
// payload is unknown (the error also matches ErrUnknownUnit), or nothing
// was read ("no readings"). ctx is not consulted.
func (s *Spec) Decode(_ context.Context, p Payload) ([]Reading, error) {
	if !gjson.ValidBytes(p.Bytes) {
		return nil, badf("payload", "not valid JSON")
	}
	// The payload is only read while decoding: strings that outlive this
	// call (the device id) are cloned.
	js := unsafe.String(unsafe.SliceData(p.Bytes), len(p.Bytes))

	device := p.Device
	if s.device != "" {
		d, err := deviceAt(js, s.device)
		if err != nil {
			return nil, err
		}
		device = d
	}
	if device == "" {
		return nil, badf("device", "no device id (empty topic device)")
	}
	at := p.ReceivedAt.UTC()
	if s.time != nil {
		t, err := s.time.at(js)
		if err != nil {
			return nil, err
		}
		at = t
	} else if p.ReceivedAt.IsZero() {
		return nil, badf("time", "the spec reads no time and the reception time is not set")
	}
	if s.regs != nil {
		return s.regs.decode(js, device, at)
	}
	out := make([]Reading, 0, len(s.vars))
	for i := range s.vars {
		v := &s.vars[i]
		res := gjson.Get(js, v.path)
		if !res.Exists() || res.Type == gjson.Null {
			if v.optional {
				continue
			}
			return nil, badf(v.path, "%s missing", v.variable)
		}
		raw, err := number(res)
		if err != nil {
			return nil, badf(v.path, "%s %v", v.variable, err)
		}
		conv := v.conv
		if v.unitPath != "" {
			u := gjson.Get(js, v.unitPath)
			if u.Type != gjson.String {
				return nil, badf(v.unitPath, "%s unit missing or not a string", v.variable)
			}
			c, _, err := lookupUnit(v.variable, u.Str)
			if err != nil {
				return nil, badUnit(v.unitPath, err)
			}
			conv = c
		}
		val := raw.convert(conv, v.scale, v.scaleDec, v.scaleExact)
		if !finite(val) {
			return nil, badf(v.path, "%s %g %s is out of range", v.variable, raw.f, conv.unit)
		}
		out = append(out, Reading{Device: device, Time: at, Variable: v.variable, Value: val, Unit: v.unit, RawValue: raw.f, RawUnit: conv.unit})
	}
	if len(out) == 0 {
		return nil, badf("payload", "no readings")
	}
	return out, nil
}

func (rs *regSpec) decode(js, device string, at time.Time) ([]Reading, error) {
	arr := gjson.Get(js, rs.path)
	if !arr.IsArray() {
		if !arr.Exists() || arr.Type == gjson.Null {
			return nil, badf(rs.path, "missing")
		}
		return nil, badf(rs.path, "not an array")
	}
	out := make([]Reading, 0, len(rs.entries))
	var seen uint64 // bit i: entries[i] was read; a variable is mapped once, so len(entries) <= len(Variables()) < 64
	var err error
	i := -1
	arr.ForEach(func(_, elem gjson.Result) bool {
		i++
		if !elem.IsObject() {
			err = badf(rs.path, "element %d is not an object", i)
			return false
		}
		id := elem.Get(rs.id)
		var key string
		switch id.Type {
		case gjson.String:
			key = id.Str
		case gjson.Number:
			key = id.Raw
		default:
			return true // no usable id: not a register we map
		}
		idx, mapped := rs.byID[key]
		if !mapped {
			return true // unknown register ids are ignored
		}
		e := &rs.entries[idx]
		if seen&(1<<idx) != 0 {
			err = badf(fmt.Sprintf("%s.%d", rs.path, i), "register %q given twice", key)
			return false
		}
		seen |= 1 << idx
		val := elem.Get(rs.value)
		if !val.Exists() || val.Type == gjson.Null {
			return true // a register without a value is an absent one
		}
		raw, nerr := number(val)
		if nerr != nil {
			err = badf(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.value), "register %q (%s) %v", key, e.variable, nerr)
			return false
		}
		conv := e.conv
		if rs.unitField != "" {
			u := elem.Get(rs.unitField)
			if u.Type != gjson.String {
				err = badf(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.unitField), "register %q (%s) unit missing or not a string", key, e.variable)
				return false
			}
			c, _, uerr := lookupUnit(e.variable, u.Str)
			if uerr != nil {
				err = badUnit(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.unitField), uerr)
				return false
			}
			conv = c
		}
		v := raw.convert(conv, 1, decimal{}, false)
		if !finite(v) {
			err = badf(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.value), "register %q (%s) %g %s is out of range", key, e.variable, raw.f, conv.unit)
			return false
		}
		out = append(out, Reading{Device: device, Time: at, Variable: e.variable, Value: v, Unit: e.unit, RawValue: raw.f, RawUnit: conv.unit})
		return true
	})
	if err != nil {
		return nil, err
	}
	for _, idx := range rs.required {
		if !hasVariable(out, rs.entries[idx].variable) {
			return nil, badf(rs.path, "required %s (register %q) missing", rs.entries[idx].variable, rs.entries[idx].id)
		}
	}
	if len(out) == 0 {
		return nil, badf("payload", "no readings")
	}
	return out, nil
}

func hasVariable(rs []Reading, variable string) bool {
	for i := range rs {
		if rs[i].Variable == variable {
			return true
		}
	}
	return false
}

// deviceAt reads the device id at path: a non-empty string or a number.
func deviceAt(js, path string) (string, error) {
	r := gjson.Get(js, path)
	var d string
	switch r.Type {
	case gjson.String:
		d = strings.TrimSpace(r.Str)
	case gjson.Number:
		d = r.Raw
	default:
		return "", badf(path, "device id missing or not a string")
	}
	if d == "" {
		return "", badf(path, "device id is empty")
	}
	return strings.Clone(d), nil
}

// at reads the event time.
func (ts *timeSpec) at(js string) (time.Time, error) {
	r := gjson.Get(js, ts.path)
	var s string
	switch r.Type {
	case gjson.String:
		s = strings.TrimSpace(r.Str)
	case gjson.Number:
		if ts.kind == timeRFC3339 || ts.kind == timeLayout {
			return time.Time{}, badf(ts.path, "time %s is a number; want a %s string", snippet(r.Raw), ts.format)
		}
		s = r.Raw
	default:
		return time.Time{}, badf(ts.path, "time missing")
	}
	var (
		t   time.Time
		err error
	)
	switch ts.kind {
	case timeRFC3339:
		t, err = time.Parse(time.RFC3339, s)
	case timeLayout:
		t, err = time.ParseInLocation(ts.layout, s, ts.loc)
	case timeUnixS:
		t, err = parseUnix(s, time.Second)
	case timeUnixMS:
		t, err = parseUnix(s, time.Millisecond)
	case timeUnixUS:
		t, err = parseUnix(s, time.Microsecond)
	}
	if err != nil {
		return time.Time{}, badf(ts.path, "unparseable time %q (%s)", snippet(s), ts.format)
	}
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, badf(ts.path, "time %q is outside 1970-01-01..2262-04-11", snippet(s))
	}
	return t.UTC(), nil
}

var errTimeRange = errors.New("out of range")

// parseUnix parses an epoch count of unit: an integer, a decimal fraction
// or, as a last resort, any float.
func parseUnix(s string, unit time.Duration) (time.Time, error) {
	if !isDecimal(s) {
		return time.Time{}, strconv.ErrSyntax
	}
	intPart, frac, _ := strings.Cut(s, ".")
	if !strings.ContainsAny(s, "eE") {
		n, err := strconv.ParseInt(intPart, 10, 64)
		if err != nil {
			return time.Time{}, err
		}
		// The fraction of one unit, in nanoseconds, truncated.
		var fracNS int64
		for i, scale := 0, int64(unit)/10; i < len(frac) && scale > 0; i, scale = i+1, scale/10 {
			fracNS += int64(frac[i]-'0') * scale
		}
		if strings.HasPrefix(intPart, "-") {
			fracNS = -fracNS
		}
		perSec := int64(time.Second / unit)
		sec, rem := n/perSec, n%perSec
		return time.Unix(sec, rem*int64(unit)+fracNS), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, err
	}
	ns := f * float64(unit)
	if !(ns >= 0 && ns < math.MaxInt64) {
		return time.Time{}, errTimeRange
	}
	return time.Unix(0, int64(ns)), nil
}

// isDecimal reports whether s is a plain decimal number: an optional sign,
// digits with at most one '.', an optional exponent. It rejects what
// strconv.ParseFloat also takes but no sensor means: "NaN", "Inf", hex,
// underscores.
func isDecimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits, dot := 0, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		case (c == 'e' || c == 'E') && digits > 0:
			i++
			if i < len(s) && (s[i] == '+' || s[i] == '-') {
				i++
			}
			if i == len(s) {
				return false
			}
			for ; i < len(s); i++ {
				if s[i] < '0' || s[i] > '9' {
					return false
				}
			}
			return true
		default:
			return false
		}
	}
	return digits > 0
}

// num is a number read from a payload: its float64 and, when it has at
// most 19 significant digits, its exact decimal.
type num struct {
	f     float64
	d     decimal
	exact bool
}

// convert converts n with c, scaled by scale (whose decimal is sd, exact
// when sdOK) first.
func (n num) convert(c conversion, scale float64, sd decimal, sdOK bool) float64 {
	if scale == 1 {
		if n.exact {
			return c.convert(n.d, n.f)
		}
		return c.apply(n.f)
	}
	if n.exact && sdOK {
		if x, ok := n.d.mul(sd); ok {
			return c.convert(x, n.f*scale)
		}
	}
	return c.apply(n.f * scale)
}

// number reads a JSON number, or a JSON string holding a decimal number,
// as a finite float64.
func number(r gjson.Result) (num, error) {
	var s string
	switch r.Type {
	case gjson.Number:
		s = r.Raw
	case gjson.String:
		s = strings.TrimSpace(r.Str)
		if !isDecimal(s) {
			return num{}, fmt.Errorf("is not a number: %q", snippet(r.Str))
		}
	default:
		return num{}, fmt.Errorf("is not a number: %s", snippet(r.Raw))
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !finite(v) {
		return num{}, fmt.Errorf("is out of range: %s", snippet(s))
	}
	d, exact := parseDecimal(s)
	return num{f: v, d: d, exact: exact}, nil
}

// snippet bounds a payload excerpt quoted in an error message.
func snippet(s string) string {
	const limit = 40
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// badf returns an error wrapping ErrBadPayload: "bad payload: field: msg".
func badf(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadPayload, field, fmt.Sprintf(format, args...))
}

// badUnit returns an error wrapping both ErrBadPayload and the unit error.
func badUnit(field string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrBadPayload, field, err)
}

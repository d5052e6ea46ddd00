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
func (s *Spec) Decode(ctx context.Context, p Payload) ([]Reading, error) {
	n := len(s.vars)
	if s.regs != nil {
		n = len(s.regs.entries)
	}
	return s.AppendDecode(ctx, make([]Reading, 0, n), p)
}

// AppendDecode is Decode appending to dst (see AppendDecoder).
func (s *Spec) AppendDecode(_ context.Context, dst []Reading, p Payload) ([]Reading, error) {
	// The payload is only read while decoding: strings that outlive this
	// call (the device id) are cloned.
	js := unsafe.String(unsafe.SliceData(p.Bytes), len(p.Bytes))
	var stack [maxStackPaths]jsonValue
	var vals []jsonValue
	if n := s.paths.len(); n <= len(stack) {
		vals = stack[:n]
	} else {
		vals = make([]jsonValue, n)
	}
	if s.regs != nil {
		return s.appendDecodeRegisters(dst, js, vals, p)
	}
	if !s.paths.validLookup(js, vals) {
		return nil, badf("payload", "not valid JSON")
	}
	device, at, err := s.deviceTime(vals, p)
	if err != nil {
		return nil, err
	}
	out, n := dst, len(dst)
	for i := range s.vars {
		v := &s.vars[i]
		res := vals[v.pathSlot]
		if !res.present() {
			if v.optional {
				continue
			}
			return nil, badf(v.path, "%s missing", v.variable)
		}
		raw, err := number(res)
		if err != nil {
			return nil, badf(v.path, "%s %v", v.variable, err)
		}
		conv := &v.conv
		if v.unitPath != "" {
			u := vals[v.unitSlot]
			if u.typ != gjson.String {
				return nil, badf(v.unitPath, "%s unit missing or not a string", v.variable)
			}
			c, err := v.q.unit(v.variable, u.str)
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
	if len(out) == n {
		return nil, badf("payload", "no readings")
	}
	return out, nil
}

// maxStackPaths is how many paths a spec may read with their values on the
// stack; a spec with more allocates them.
const maxStackPaths = 16

// maxStackElems is how many register array elements the validating pass
// reads the fields of; a longer array is read again after it.
const maxStackElems = 8

// appendDecodeRegisters is AppendDecode for a spec with registers, over
// the payload js and its path values vals: the validating pass also finds
// the fields of each register.
func (s *Spec) appendDecodeRegisters(dst []Reading, js string, vals []jsonValue, p Payload) ([]Reading, error) {
	var elems [maxStackElems]elemValues
	el := elemScan{slot: s.regsSlot, paths: s.regs.elem, elems: elems[:]}
	if !s.paths.validLookupElems(js, vals, &el) {
		return nil, badf("payload", "not valid JSON")
	}
	device, at, err := s.deviceTime(vals, p)
	if err != nil {
		return nil, err
	}
	return s.regs.appendDecode(dst, vals[s.regsSlot], &el, device, at)
}

// deviceTime reads the device id and the event time of a payload whose
// paths are vals.
func (s *Spec) deviceTime(vals []jsonValue, p Payload) (string, time.Time, error) {
	device := p.Device
	if s.device != "" {
		d, err := deviceOf(vals[s.deviceSlot], s.device)
		if err != nil {
			return "", time.Time{}, err
		}
		device = d
	}
	if device == "" {
		return "", time.Time{}, badf("device", "no device id (empty topic device)")
	}
	at := p.ReceivedAt.UTC()
	if s.time != nil {
		t, err := s.time.of(vals[s.time.slot])
		if err != nil {
			return "", time.Time{}, err
		}
		at = t
	} else if p.ReceivedAt.IsZero() {
		return "", time.Time{}, badf("time", "the spec reads no time and the reception time is not set")
	}
	return device, at, nil
}

// appendDecode reads the registers array arr (the value at rs.path),
// appending to dst. el is what the validating pass found in its elements:
// when el.done, they are not read again.
func (rs *regSpec) appendDecode(dst []Reading, arr jsonValue, el *elemScan, device string, at time.Time) ([]Reading, error) {
	if !arr.isArray() {
		if !arr.present() {
			return nil, badf(rs.path, "missing")
		}
		return nil, badf(rs.path, "not an array")
	}
	out, n := dst, len(dst)
	var seen uint64 // bit i: entries[i] was read; a variable is mapped once, so len(entries) <= len(Variables()) < 64
	var stack [maxElemPaths]jsonValue
	lookedUp := stack[:rs.elem.len()] // id, value and unit: at most three paths
	it := arrayIter{s: arr.raw, i: 1}
	for i := 0; ; i++ {
		var elem string
		var fields []jsonValue
		if el.done {
			if i == el.n {
				break
			}
			e := &el.elems[i]
			elem, fields = e.raw, e.vals[:len(lookedUp)]
			if e.redo && elem[0] == '{' {
				rs.elem.lookup(elem, lookedUp)
				fields = lookedUp
			}
		} else {
			var ok bool
			if elem, ok = it.next(); !ok {
				break
			}
			if elem[0] == '{' {
				rs.elem.lookup(elem, lookedUp)
			}
			fields = lookedUp
		}
		if elem[0] != '{' {
			return nil, badf(rs.path, "element %d is not an object", i)
		}
		id := fields[rs.idSlot]
		var key string
		switch id.typ {
		case gjson.String:
			key = id.str
		case gjson.Number:
			key = id.raw
		default:
			continue // no usable id: not a register we map
		}
		idx, mapped := rs.byID[key]
		if !mapped {
			continue // unknown register ids are ignored
		}
		e := &rs.entries[idx]
		if seen&(1<<idx) != 0 {
			return nil, badf(fmt.Sprintf("%s.%d", rs.path, i), "register %q given twice", key)
		}
		seen |= 1 << idx
		val := fields[rs.valueSlot]
		if !val.present() {
			continue // a register without a value is an absent one
		}
		raw, err := number(val)
		if err != nil {
			return nil, badf(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.value), "register %q (%s) %v", key, e.variable, err)
		}
		conv := &e.conv
		if rs.unitField != "" {
			u := fields[rs.unitSlot]
			if u.typ != gjson.String {
				return nil, badf(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.unitField), "register %q (%s) unit missing or not a string", key, e.variable)
			}
			c, err := e.q.unit(e.variable, u.str)
			if err != nil {
				return nil, badUnit(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.unitField), err)
			}
			conv = c
		}
		v := raw.convert(conv, 1, decimal{}, false)
		if !finite(v) {
			return nil, badf(fmt.Sprintf("%s.%d.%s", rs.path, i, rs.value), "register %q (%s) %g %s is out of range", key, e.variable, raw.f, conv.unit)
		}
		out = append(out, Reading{Device: device, Time: at, Variable: e.variable, Value: v, Unit: e.unit, RawValue: raw.f, RawUnit: conv.unit})
	}
	for _, idx := range rs.required {
		if !hasVariable(out[n:], rs.entries[idx].variable) {
			return nil, badf(rs.path, "required %s (register %q) missing", rs.entries[idx].variable, rs.entries[idx].id)
		}
	}
	if len(out) == n {
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

// deviceOf reads the device id r, the value at path: a non-empty string
// or a number.
func deviceOf(r jsonValue, path string) (string, error) {
	var d string
	switch r.typ {
	case gjson.String:
		d = strings.TrimSpace(r.str)
	case gjson.Number:
		d = r.raw
	default:
		return "", badf(path, "device id missing or not a string")
	}
	if d == "" {
		return "", badf(path, "device id is empty")
	}
	return strings.Clone(d), nil
}

// of reads the event time r, the value at ts.path.
func (ts *timeSpec) of(r jsonValue) (time.Time, error) {
	var s string
	switch r.typ {
	case gjson.String:
		s = strings.TrimSpace(r.str)
	case gjson.Number:
		if ts.kind == timeRFC3339 || ts.kind == timeLayout {
			return time.Time{}, badf(ts.path, "time %s is a number; want a %s string", snippet(r.raw), ts.format)
		}
		s = r.raw
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
	if n, ok := parseDigits(s); ok {
		// What the general path below gives for an integer.
		perSec := int64(time.Second / unit)
		return time.Unix(n/perSec, n%perSec*int64(unit)), nil
	}
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

// parseDigits parses s when it is 1 to 18 ASCII digits, which cannot
// overflow an int64: strconv.ParseInt's result without its generality.
func parseDigits(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
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
func (n num) convert(c *conversion, scale float64, sd decimal, sdOK bool) float64 {
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
func number(r jsonValue) (num, error) {
	var s string
	switch r.typ {
	case gjson.Number:
		s = r.raw
	case gjson.String:
		s = strings.TrimSpace(r.str)
		if !isDecimal(s) {
			return num{}, fmt.Errorf("is not a number: %q", snippet(r.str))
		}
	default:
		return num{}, fmt.Errorf("is not a number: %s", snippet(r.raw))
	}
	d, exact := parseDecimal(s)
	if exact {
		if v, ok := d.float(); ok {
			return num{f: v, d: d, exact: true}, nil
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !finite(v) {
		return num{}, fmt.Errorf("is out of range: %s", snippet(s))
	}
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

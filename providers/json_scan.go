package providers

import (
	"strings"

	"github.com/tidwall/gjson"
)

// validLookup is gjson.Valid followed by lookup, in one pass: it validates
// js exactly as gjson.Valid does and, while at it, resolves the paths. It
// returns false when js is not valid JSON, leaving vals unspecified.
// Validating and then walking read a payload twice; a decoder validates
// every payload, so this is the pass it cannot avoid.
func (ps *pathSet) validLookup(js string, vals []jsonValue) bool {
	valid, _ := ps.validLookupScanned(js, vals, nil)
	return valid
}

// validLookupElems is validLookup that also, when el is not nil, looks up
// el.paths in every element of the array at path el.slot, in the same
// pass (see elemScan). el.done reports whether it did.
func (ps *pathSet) validLookupElems(js string, vals []jsonValue, el *elemScan) bool {
	valid, _ := ps.validLookupScanned(js, vals, el)
	return valid
}

// validLookupScanned is validLookupElems that also reports whether the
// scan resolved the paths (scanned), rather than gjson.Get: only then are
// the paths under one marked with pathSet.within read in its value.
func (ps *pathSet) validLookupScanned(js string, vals []jsonValue, el *elemScan) (valid, scanned bool) {
	clear(vals)
	sc := scanner{s: js, left: len(ps.paths), arrSlot: -1}
	if el != nil {
		el.n, el.done = 0, false
		if el.paths.root != nil && el.paths.len() <= maxElemPaths {
			sc.arrSlot = el.slot
		}
	}
	i := sc.space(0)
	if i < len(js) && js[i] == '{' && ps.root != nil {
		sc.node = ps.root
	}
	i, ok := sc.value(i, sc.node, vals, el)
	if !ok || sc.space(i) != len(js) {
		return false, false
	}
	if sc.node == nil || sc.bail {
		// Not an object, a path that is not simple, or a path into an
		// array: gjson.Get decides.
		for i, p := range ps.paths {
			vals[i] = fromResult(gjson.Get(js, p))
		}
		if el != nil {
			el.done = false // the elements scanned may not be of gjson's array
		}
		return true, false
	}
	return true, true
}

// maxElemPaths is how many paths an elemScan looks up in each element.
const maxElemPaths = 3

// An elemScan asks validLookupElems to look up paths in each element of
// the array at the path of slot (the registers of a spec), and holds what
// it found: the decoder then reads the array without walking it again.
// The array scanned is the one whose value the lookup gives for slot: the
// first member holding the path, as gjson.Get reads it.
type elemScan struct {
	slot  int      // in the lookup's path set
	paths *pathSet // looked up in each element; at most maxElemPaths
	// elems[:n] are the array's elements, in order, when done. done is
	// false when the lookup did not scan the array (no array at slot, more
	// than len(elems) elements, a path set that is not simple or a lookup
	// left to gjson.Get); the caller then reads the array itself.
	elems []elemValues
	n     int
	done  bool
}

// elemValues are one array element and, when it is an object, the values
// of elemScan.paths in it, as pathSet.lookup gives them, unless redo is
// set: a path goes into an array, where only gjson.Get can tell.
type elemValues struct {
	raw  string // the element as written
	redo bool
	vals [maxElemPaths]jsonValue
}

// scanner is the state of validLookup. Its methods mirror gjson's
// validator (validany, validobject, ...) one for one, so that it accepts
// exactly what gjson.Valid accepts (FuzzPathSet). The values found go to
// the vals argument of its methods, which is not a field so that it can
// stay on the caller's stack.
type scanner struct {
	s    string
	node *pathNode // the root, or nil when the paths are left to gjson.Get
	left int       // paths not resolved yet
	bail bool      // a path goes into an array
	// arrSlot is the slot of the elemScan passed down the scan (as an
	// argument, not a field, so that it stays on the caller's stack), or -1
	// when there is none.
	arrSlot int
	// esc is whether the last string str scanned holds a backslash: a
	// string without one is its own decoded text.
	esc bool
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// space returns the index of the first byte from i that is not JSON space.
func (sc *scanner) space(i int) int {
	for i < len(sc.s) && sc.s[i] <= ' ' && isSpace(sc.s[i]) {
		i++
	}
	return i
}

// value validates the value at i (after optional space) and returns the
// index just past it. n is the path node whose children are looked up in
// it, when it is an object; nil when no path goes through it. el is the
// elemScan of sc.arrSlot, if any.
func (sc *scanner) value(i int, n *pathNode, vals []jsonValue, el *elemScan) (int, bool) {
	i = sc.space(i)
	if i >= len(sc.s) {
		return i, false
	}
	switch sc.s[i] {
	case '{':
		return sc.object(i+1, n, vals, el)
	case '[':
		if n != nil && sc.left > 0 {
			sc.bail = true // gjson reads indexes and queries in arrays
		}
		return sc.array(i+1, vals)
	case '"':
		return sc.str(i + 1)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return sc.number(i)
	case 't':
		return sc.literal(i, "true")
	case 'f':
		return sc.literal(i, "false")
	case 'n':
		return sc.literal(i, "null")
	}
	return i, false
}

func (sc *scanner) object(i int, n *pathNode, vals []jsonValue, el *elemScan) (int, bool) {
	s := sc.s
	i = sc.space(i)
	if i < len(s) && s[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(s) || s[i] != '"' {
			return i, false
		}
		ks := i
		var ok bool
		if i, ok = sc.str(i + 1); !ok {
			return i, false
		}
		var child *pathNode
		if n != nil {
			child = n.match(s[ks:i], sc.esc)
		}
		if i = sc.space(i); i >= len(s) || s[i] != ':' {
			return i, false
		}
		vs := sc.space(i + 1)
		var next *pathNode
		if child != nil && len(child.children) > 0 && !(child.inValue && vals[child.slot].exists()) {
			// (A path marked within is read in its own value only, the
			// first member's, which sets its slot.)
			next = child
		}
		if child != nil && sc.arrSlot >= 0 && child.slot == sc.arrSlot && next == nil && vs < len(s) && s[vs] == '[' && !vals[child.slot].exists() {
			// The array this member's value becomes the value of arrSlot.
			i, ok = sc.elements(vs+1, el)
		} else {
			i, ok = sc.value(vs, next, vals, el)
		}
		if !ok {
			return i, false
		}
		if child != nil && child.slot >= 0 && !vals[child.slot].exists() {
			// A string value was the last string scanned, so sc.esc is
			// its own.
			vals[child.slot] = scannedLeaf(s[vs:i], sc.esc)
			sc.left--
		}
		if i = sc.space(i); i >= len(s) {
			return i, false
		}
		switch s[i] {
		case '}':
			return i + 1, true
		case ',':
			i = sc.space(i + 1)
		default:
			return i, false
		}
	}
}

// match returns the child of n whose key is the JSON string key (quotes
// included), or nil. esc is whether key holds a backslash.
func (n *pathNode) match(quoted string, esc bool) *pathNode {
	key := quoted[1 : len(quoted)-1]
	if esc {
		key = gjson.Parse(quoted).Str // gjson's own unescaping
	}
	for _, e := range n.children {
		if e.key == key {
			return e.node
		}
	}
	return nil
}

func (sc *scanner) array(i int, vals []jsonValue) (int, bool) {
	s := sc.s
	i = sc.space(i)
	if i < len(s) && s[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = sc.value(i, nil, vals, nil); !ok {
			return i, false
		}
		if i = sc.space(i); i >= len(s) {
			return i, false
		}
		switch s[i] {
		case ']':
			return i + 1, true
		case ',':
			i++
		default:
			return i, false
		}
	}
}

// elements is array for the array that becomes the value of el's
// slot, looking up el.paths in each element that is an object. The
// scan's state (left, bail) is set aside meanwhile: in an element, it
// counts the element's paths.
func (sc *scanner) elements(i int, el *elemScan) (int, bool) {
	// Only this array is the value; and in the elements, slots index
	// elemValues.vals, not the lookup's values.
	sc.arrSlot = -1
	left, bail := sc.left, sc.bail
	i, ok := sc.elementsIn(i, el)
	sc.left, sc.bail = left, bail
	return i, ok
}

func (sc *scanner) elementsIn(i int, el *elemScan) (int, bool) {
	s := sc.s
	n, full := 0, false
	i = sc.space(i)
	if i < len(s) && s[i] == ']' {
		el.n, el.done = 0, true
		return i + 1, true
	}
	for {
		start := sc.space(i)
		var ok bool
		switch {
		case n == len(el.elems):
			full = true // the caller reads the array itself
			i, ok = sc.value(start, nil, nil, nil)
		case start < len(s) && s[start] == '{':
			e := &el.elems[n]
			e.vals = [maxElemPaths]jsonValue{}
			sc.left, sc.bail = el.paths.len(), false
			i, ok = sc.object(start+1, el.paths.root, e.vals[:], nil)
			e.raw, e.redo = s[start:i], sc.bail
			n++
		default:
			i, ok = sc.value(start, nil, nil, nil)
			el.elems[n] = elemValues{raw: s[start:i]}
			n++
		}
		if !ok {
			return i, false
		}
		if i = sc.space(i); i >= len(s) {
			return i, false
		}
		switch s[i] {
		case ']':
			el.n, el.done = n, !full
			return i + 1, true
		case ',':
			i++
		default:
			return i, false
		}
	}
}

// strPlain marks the bytes a JSON string holds as they are: not a control
// character, a quote or a backslash.
var strPlain = func() (t [256]bool) {
	for c := ' '; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// The bit tricks of str's fast loop: for n <= 0x80,
// (x - 0x01..01*n) & ^x & 0x80..80 is not zero exactly when some byte of
// the word x is below n (with n = 1: is zero). A byte of 0x80 or more has
// its top bit set in x, cleared by ^x, so it never counts: such bytes are
// plain, as in strPlain.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// str validates the rest of a string from i, just past its opening quote.
func (sc *scanner) str(i int) (int, bool) {
	s := sc.s
	sc.esc = false
	for {
		// 8 bytes at a time while all are strPlain: none is below ' ',
		// a quote or a backslash. The compiler makes the word one load.
		for ; i+8 <= len(s); i += 8 {
			b := s[i : i+8]
			x := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
				uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			q := x ^ (ones * '"')   // zero bytes where x has a quote
			bs := x ^ (ones * '\\') // zero bytes where x has a backslash
			if ((x-ones*' ')&^x|(q-ones)&^q|(bs-ones)&^bs)&highs != 0 {
				break
			}
		}
		for i < len(s) && strPlain[s[i]] {
			i++
		}
		if i >= len(s) {
			return i, false
		}
		switch s[i] {
		case '"':
			return i + 1, true
		case '\\':
			sc.esc = true
			i++
			if i >= len(s) {
				return i, false
			}
			switch s[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				for range 4 {
					i++
					if i >= len(s) || !ishex(s[i]) {
						return i, false
					}
				}
				i++
			default:
				return i, false
			}
		default: // a control character
			return i, false
		}
	}
}

func ishex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number validates the number at i: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (sc *scanner) number(i int) (int, bool) {
	s := sc.s
	if s[i] == '-' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			return i, false
		}
	}
	if s[i] == '0' {
		i++
	} else {
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			return i, false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			return i, false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return i, true
}

func (sc *scanner) literal(i int, lit string) (int, bool) {
	if strings.HasPrefix(sc.s[i:], lit) {
		return i + len(lit), true
	}
	return i, false
}

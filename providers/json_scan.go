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
	clear(vals)
	sc := scanner{s: js, left: len(ps.paths)}
	i := sc.space(0)
	if i < len(js) && js[i] == '{' && ps.root != nil {
		sc.node = ps.root
	}
	i, ok := sc.value(i, sc.node, vals)
	if !ok || sc.space(i) != len(js) {
		return false
	}
	if sc.node == nil || sc.bail {
		// Not an object, a path that is not simple, or a path into an
		// array: gjson.Get decides.
		for i, p := range ps.paths {
			vals[i] = fromResult(gjson.Get(js, p))
		}
	}
	return true
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
// it, when it is an object; nil when no path goes through it.
func (sc *scanner) value(i int, n *pathNode, vals []jsonValue) (int, bool) {
	i = sc.space(i)
	if i >= len(sc.s) {
		return i, false
	}
	switch sc.s[i] {
	case '{':
		return sc.object(i+1, n, vals)
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

func (sc *scanner) object(i int, n *pathNode, vals []jsonValue) (int, bool) {
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
			child = n.match(s[ks:i])
		}
		if i = sc.space(i); i >= len(s) || s[i] != ':' {
			return i, false
		}
		vs := sc.space(i + 1)
		var next *pathNode
		if child != nil && len(child.children) > 0 {
			next = child
		}
		if i, ok = sc.value(vs, next, vals); !ok {
			return i, false
		}
		if child != nil && child.slot >= 0 && !vals[child.slot].exists() {
			vals[child.slot] = leaf(s[vs:i])
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
// included), or nil.
func (n *pathNode) match(quoted string) *pathNode {
	key := quoted[1 : len(quoted)-1]
	if strings.IndexByte(key, '\\') >= 0 {
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
		if i, ok = sc.value(i, nil, vals); !ok {
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

// strPlain marks the bytes a JSON string holds as they are: not a control
// character, a quote or a backslash.
var strPlain = func() (t [256]bool) {
	for c := ' '; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str validates the rest of a string from i, just past its opening quote.
func (sc *scanner) str(i int) (int, bool) {
	s := sc.s
	for {
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

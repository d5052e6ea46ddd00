package providers

import (
	"slices"
	"strings"

	"github.com/tidwall/gjson"
)

// A payload is read with gjson.Get semantics, but gjson.Get scans the
// document from the start for every path, and a spec reads five or six of
// them (device, time, each variable, each unit). A pathSet finds all of a
// spec's paths in one pass over the payload instead, and gives for each
// exactly what gjson.Get gives; TestPathSetMatchesGet and FuzzPathSet hold
// it to that.

// jsonValue is what the decoders read of a gjson.Result: its type, its text
// as written (Raw) and, for a string, its decoded text (Str). The zero
// value is a value that does not exist.
type jsonValue struct {
	typ gjson.Type
	raw string
	str string
}

func fromResult(r gjson.Result) jsonValue { return jsonValue{typ: r.Type, raw: r.Raw, str: r.Str} }

// exists is gjson.Result.Exists.
func (v jsonValue) exists() bool { return v.typ != gjson.Null || v.raw != "" }

// present reports whether v exists and is not null: what a spec calls a
// value given.
func (v jsonValue) present() bool { return v.exists() && v.typ != gjson.Null }

func (v jsonValue) isObject() bool { return v.typ == gjson.JSON && v.raw[0] == '{' }

func (v jsonValue) isArray() bool { return v.typ == gjson.JSON && v.raw[0] == '[' }

// leaf is the jsonValue of raw, one JSON value of a valid document without
// surrounding space, as gjson.Get returns it.
func leaf(raw string) jsonValue {
	return scannedLeaf(raw, raw[0] == '"' && strings.IndexByte(raw, '\\') >= 0)
}

// scannedLeaf is leaf for a raw known to hold a backslash or not (esc),
// when it is a string; esc is ignored otherwise.
func scannedLeaf(raw string, esc bool) jsonValue {
	switch raw[0] {
	case '"':
		if esc {
			return fromResult(gjson.Parse(raw)) // gjson's own unescaping
		}
		return jsonValue{typ: gjson.String, raw: raw, str: raw[1 : len(raw)-1]}
	case '{', '[':
		return jsonValue{typ: gjson.JSON, raw: raw}
	case 't':
		return jsonValue{typ: gjson.True, raw: raw}
	case 'f':
		return jsonValue{typ: gjson.False, raw: raw}
	case 'n':
		return jsonValue{typ: gjson.Null, raw: raw}
	default:
		return jsonValue{typ: gjson.Number, raw: raw}
	}
}

// A pathSet is a compiled set of gjson paths, built with newPathSet and
// add. Only simple paths (see
// simplePath) are walked; for a set with another path, a document that is
// not an object, or a path that goes into an array (where gjson reads
// indexes and queries), lookup asks gjson.Get for each path. Immutable once
// built.
type pathSet struct {
	paths []string
	root  *pathNode // nil: some path is not simple
}

// len is the number of distinct paths.
func (ps *pathSet) len() int { return len(ps.paths) }

type pathNode struct {
	slot     int // index in paths of the path ending here; -1 if none
	children []pathEdge
	// inValue: the paths under this one are read in this path's value
	// (see pathSet.within), not each on its own as gjson.Get reads them.
	inValue bool
}

type pathEdge struct {
	key  string
	node *pathNode
}

// newPathSet compiles paths; a path given twice is looked up once.
func newPathSet(paths ...string) *pathSet {
	ps := &pathSet{root: &pathNode{slot: -1}}
	for _, p := range paths {
		ps.add(p)
	}
	return ps
}

// add adds path to the set if it is not there yet, and returns its index in
// the lookup's values.
func (ps *pathSet) add(path string) int {
	if i := slices.Index(ps.paths, path); i >= 0 {
		return i
	}
	ps.paths = append(ps.paths, path)
	if ps.root == nil {
		return len(ps.paths) - 1
	}
	if !simplePath(path) {
		ps.root = nil
		return len(ps.paths) - 1
	}
	n := ps.root
	for key := range strings.SplitSeq(path, ".") {
		n = n.child(key)
	}
	n.slot = len(ps.paths) - 1
	return n.slot
}

// within makes the paths of ps under path, which is in ps, read in the
// value path resolves to, the first member holding it: what lookup on
// that value gives. gjson.Get reads each path on its own, and so differs
// when a key is given twice; a set with within is not gjson.Get's, and
// its user must take the paths under path from a lookup on path's value
// when validLookupScanned reports that gjson.Get read them.
func (ps *pathSet) within(path string) {
	if ps.root == nil {
		return
	}
	n := ps.root
	for key := range strings.SplitSeq(path, ".") {
		n = n.child(key)
	}
	if n.slot < 0 {
		panic("providers: within " + path + ": not a path of the set")
	}
	n.inValue = true
}

func (n *pathNode) child(key string) *pathNode {
	for _, e := range n.children {
		if e.key == key {
			return e.node
		}
	}
	c := &pathNode{slot: -1}
	n.children = append(n.children, pathEdge{key: key, node: c})
	return c
}

// simplePath reports whether p is dot-separated keys of letters, digits,
// '_', '-' or non-ASCII bytes, none of them all digits: a path in which
// gjson sees nothing but object keys (no wildcards, escapes, modifiers,
// pipes, queries or array indexes).
func simplePath(p string) bool {
	if p == "" {
		return false
	}
	for key := range strings.SplitSeq(p, ".") {
		digits := 0
		for i := 0; i < len(key); i++ {
			switch c := key[i]; {
			case c >= '0' && c <= '9':
				digits++
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '-', c >= 0x80:
			default:
				return false
			}
		}
		if key == "" || digits == len(key) {
			return false
		}
	}
	return true
}

// lookup sets vals[i] to gjson.Get(js, ps.paths[i]) for every path. js
// must be valid JSON (gjson.Valid); vals must have len(ps.paths) elements.
func (ps *pathSet) lookup(js string, vals []jsonValue) {
	clear(vals)
	if ps.root != nil {
		i := 0
		for i < len(js) && js[i] <= ' ' {
			i++
		}
		// gjson.Get reads an object from its first '{'; anything else is
		// left to it.
		if i < len(js) && js[i] == '{' {
			left := len(ps.paths)
			if ps.root.walk(js[i:], vals, &left) {
				return
			}
			clear(vals)
		}
	}
	for i, p := range ps.paths {
		vals[i] = fromResult(gjson.Get(js, p))
	}
}

// walk resolves the paths under n in the object obj, each to the first
// member that holds it, as gjson does: a member whose key matches but
// whose value does not hold the rest of the path is passed over for a
// later one with the same key. left counts the paths not resolved yet;
// walk stops when it reaches 0. It returns false, leaving vals partly
// set, when a path goes into an array.
func (n *pathNode) walk(obj string, vals []jsonValue, left *int) bool {
	it := objectIter{s: obj, i: 1}
	for {
		key, raw, ok := it.next()
		if !ok {
			return true
		}
		for _, e := range n.children {
			if e.key != key {
				continue
			}
			descend := len(e.node.children) > 0
			if s := e.node.slot; s >= 0 && !vals[s].exists() {
				vals[s] = leaf(raw)
				if *left--; *left == 0 {
					return true
				}
			} else if s >= 0 && e.node.inValue {
				descend = false // not the value of e's path
			}
			if descend {
				switch raw[0] {
				case '{':
					if !e.node.walk(raw, vals, left) {
						return false
					}
					if *left == 0 {
						return true
					}
				case '[':
					return false
				}
			}
		}
	}
}

// objectIter iterates over the members of a valid JSON object s from
// index i (just past its '{').
type objectIter struct {
	s string
	i int
}

// next returns the next member's key, decoded, and its value as written.
func (it *objectIter) next() (key, raw string, ok bool) {
	s, i := it.s, it.i
	for ; i < len(s) && s[i] != '"'; i++ {
		if s[i] == '}' {
			it.i = len(s)
			return "", "", false
		}
	}
	if i >= len(s) {
		it.i = i
		return "", "", false
	}
	end := skipString(s, i)
	key = s[i+1 : end-1]
	if strings.IndexByte(key, '\\') >= 0 {
		key = gjson.Parse(s[i:end]).Str // gjson's own unescaping
	}
	i = end
	for i < len(s) && (s[i] <= ' ' || s[i] == ':') {
		i++
	}
	end = skipValue(s, i)
	it.i = end
	return key, s[i:end], i < end
}

// arrayIter iterates over the elements of a valid JSON array s from index i
// (just past its '[').
type arrayIter struct {
	s string
	i int
}

// next returns the next element as written.
func (it *arrayIter) next() (raw string, ok bool) {
	s, i := it.s, it.i
	for i < len(s) && (s[i] <= ' ' || s[i] == ',') {
		i++
	}
	if i >= len(s) || s[i] == ']' {
		it.i = len(s)
		return "", false
	}
	end := skipValue(s, i)
	it.i = end
	return s[i:end], i < end
}

// skipValue returns the index just past the valid JSON value starting at i.
func skipValue(s string, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '"':
		return skipString(s, i)
	case '{', '[':
		depth := 0
		for i < len(s) {
			switch s[i] {
			case '"':
				i = skipString(s, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number or literal
		for i < len(s) && s[i] > ' ' && s[i] != ',' && s[i] != '}' && s[i] != ']' {
			i++
		}
		return i
	}
}

// skipString returns the index just past the string whose opening quote is
// at i.
func skipString(s string, i int) int {
	for i++; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(s)
}

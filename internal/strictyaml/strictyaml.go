// Package strictyaml decodes YAML onto Go structs key by key, so that every
// unknown key, repeated key and badly typed value is reported with its full
// path and line, all of them at once, instead of yaml.v3's first error (or,
// with KnownFields, errors that name a Go type rather than the key). The
// configuration and the provider specs both decode this way.
package strictyaml

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Report receives one problem: the key path ("kafka.brokers[0]", or
// "(file)" for the document itself) and what is wrong with it.
type Report func(key, format string, args ...any)

// Hook decodes the values of one Go type itself (a mapping kept in file
// order, say), reporting problems through report.
type Hook func(n *yaml.Node, v reflect.Value, path string, report Report)

// Options adjust decoding.
type Options struct {
	// MergeMaps merges a mapping from the document over the entries a map
	// already holds (defaults), instead of replacing the map.
	MergeMaps bool
	// Hooks decode the values of the given types.
	Hooks map[reflect.Type]Hook
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// Decode decodes n onto v, which must be settable. A value that fails to
// decode keeps what v held, so every problem is reported and nothing else
// changes because of it.
func Decode(n *yaml.Node, v reflect.Value, path string, opts Options, report Report) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if hook, ok := opts.Hooks[v.Type()]; ok {
		hook(n, v, path, report)
		return
	}
	null := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	switch {
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		if null {
			return // an empty block is an absent one
		}
		fresh := reflect.New(v.Type().Elem())
		Decode(n, fresh.Elem(), path, opts, report)
		v.Set(fresh)
		return
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if null {
			return
		}
		if n.Kind != yaml.SequenceNode {
			report(KeyOr(path), "must be a list (line %d)", n.Line)
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			Decode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i), opts, report)
		}
		v.Set(out)
		return
	case v.Kind() == reflect.Struct && !reflect.PointerTo(v.Type()).Implements(unmarshalerType):
		if n.Kind != yaml.MappingNode {
			report(KeyOr(path), "must be a mapping (line %d)", n.Line)
			return
		}
		fields := Fields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := Join(path, k.Value)
			if seen[k.Value] {
				report(key, "is given twice (line %d)", k.Line)
				continue
			}
			seen[k.Value] = true
			idx, ok := fields[k.Value]
			if !ok {
				report(key, "unknown key (line %d)%s", k.Line, suggest(k.Value, fields))
				continue
			}
			Decode(val, v.Field(idx), key, opts, report)
		}
		return
	}
	// A leaf: decode into a fresh value so a failure leaves what v held.
	switch {
	case n.Kind == yaml.MappingNode && v.Kind() == reflect.Slice:
		report(KeyOr(path), "must be a list (line %d)", n.Line)
		return
	case (n.Kind == yaml.MappingNode && v.Kind() != reflect.Map && v.Kind() != reflect.Struct) ||
		(n.Kind == yaml.SequenceNode && v.Kind() != reflect.Slice):
		report(KeyOr(path), "must be a single value (line %d)", n.Line)
		return
	}
	fresh := reflect.New(v.Type())
	if err := n.Decode(fresh.Interface()); err != nil {
		report(KeyOr(path), "%s (line %d)", CleanError(err), n.Line)
		return
	}
	if opts.MergeMaps && v.Kind() == reflect.Map && !v.IsNil() && !fresh.Elem().IsNil() {
		for _, k := range v.MapKeys() {
			if !fresh.Elem().MapIndex(k).IsValid() {
				fresh.Elem().SetMapIndex(k, v.MapIndex(k))
			}
		}
	}
	v.Set(fresh.Elem())
}

// KeyOr returns path, or "(file)" for the document itself.
func KeyOr(path string) string {
	if path == "" {
		return "(file)"
	}
	return path
}

// Join appends key to path with a dot.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// CleanError strips yaml.v3's "yaml: unmarshal errors:\n  line N:" noise.
func CleanError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0]
		if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "line ") {
			msg = msg[i+2:]
		}
		return msg
	}
	return err.Error()
}

// Fields maps each yaml tag of struct type t to its field index.
func Fields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if name := Name(t.Field(i)); name != "" {
			m[name] = i
		}
	}
	return m
}

// Name returns a field's yaml key, or "" when it has none.
func Name(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	return tag
}

func suggest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if distance(strings.ToLower(key), name) <= 2 {
			return fmt.Sprintf("; did you mean %q?", name)
		}
	}
	return "; known keys: " + strings.Join(names, ", ")
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

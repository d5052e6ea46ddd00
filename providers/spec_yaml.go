package providers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The YAML document of a spec, decoded key by key (the approach of
// config/load.go) so every unknown key and every bad value is reported
// with its full path, not only the first.

type specFile struct {
	Name      string         `yaml:"name"`
	Format    string         `yaml:"format"`
	Device    string         `yaml:"device"`
	Time      *timeFile      `yaml:"time"`
	Variables []variableFile `yaml:"variables"`
	Registers *registersFile `yaml:"registers"`
}

type timeFile struct {
	Path     string `yaml:"path"`
	Format   string `yaml:"format"`
	Timezone string `yaml:"timezone"`
}

type variableFile struct {
	Variable string   `yaml:"variable"`
	Path     string   `yaml:"path"`
	Unit     *string  `yaml:"unit"` // a pointer: "" is pH's fixed unit
	UnitPath string   `yaml:"unit_path"`
	Scale    *float64 `yaml:"scale"`
	Optional bool     `yaml:"optional"`
}

type registersFile struct {
	Path      string     `yaml:"path"`
	ID        string     `yaml:"id"`
	Value     string     `yaml:"value"`
	Unit      *string    `yaml:"unit"`
	FixedUnit *string    `yaml:"fixed_unit"`
	Map       []mapEntry `yaml:"map"`
	Required  []string   `yaml:"required"`
}

// mapEntry is one "register id: variable" pair, kept in file order.
type mapEntry struct {
	ID, Variable string
}

// fieldError is one spec problem: the key path it concerns and what is
// wrong with it. It unwraps to the cause, so an unknown unit still
// matches ErrUnknownUnit.
type fieldError struct {
	key string
	err error
}

func (e *fieldError) Error() string { return e.key + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// problems collects every fieldError of one parse.
type problems struct{ errs []error }

func (p *problems) addf(key, format string, args ...any) {
	p.errs = append(p.errs, &fieldError{key: key, err: fmt.Errorf(format, args...)})
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// decodeSpecYAML decodes data onto f, reporting problems to p.
func decodeSpecYAML(data []byte, f *specFile, p *problems) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.addf("(file)", "is empty")
			return
		}
		p.addf("(file)", "is not valid YAML: %v", err)
		return
	}
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
		p.addf("(file)", "is empty")
		return
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		p.addf("(file)", "must hold one YAML document (one spec per file)")
	}
	decodeNode(doc.Content[0], reflect.ValueOf(f).Elem(), "", p)
}

var mapEntriesType = reflect.TypeFor[[]mapEntry]()

func decodeNode(n *yaml.Node, v reflect.Value, path string, p *problems) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch {
	case v.Type() == mapEntriesType:
		decodeMapEntries(n, v, path, p)
		return
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return // an empty block is an absent one
		}
		fresh := reflect.New(v.Type().Elem())
		decodeNode(n, fresh.Elem(), path, p)
		v.Set(fresh)
		return
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			p.addf(keyOr(path), "must be a list (line %d)", n.Line)
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			decodeNode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i), p)
		}
		v.Set(out)
		return
	case v.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			p.addf(keyOr(path), "must be a mapping (line %d)", n.Line)
			return
		}
		fields := yamlFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			if seen[k.Value] {
				p.addf(key, "is given twice (line %d)", k.Line)
				continue
			}
			seen[k.Value] = true
			idx, ok := fields[k.Value]
			if !ok {
				p.addf(key, "unknown key (line %d)%s", k.Line, suggest(k.Value, fields))
				continue
			}
			decodeNode(val, v.Field(idx), key, p)
		}
		return
	}
	// A leaf: decode into a fresh value so a failure leaves the zero value.
	if n.Kind == yaml.MappingNode || (n.Kind == yaml.SequenceNode && v.Kind() != reflect.Slice) {
		p.addf(keyOr(path), "must be a single value (line %d)", n.Line)
		return
	}
	fresh := reflect.New(v.Type())
	if err := n.Decode(fresh.Interface()); err != nil {
		p.addf(keyOr(path), "%s (line %d)", cleanYAMLError(err), n.Line)
		return
	}
	v.Set(fresh.Elem())
}

// decodeMapEntries decodes a mapping of scalars in file order.
func decodeMapEntries(n *yaml.Node, v reflect.Value, path string, p *problems) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.addf(keyOr(path), "must be a mapping of register id to variable (line %d)", n.Line)
		return
	}
	var out []mapEntry
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		switch {
		case k.Kind != yaml.ScalarNode:
			p.addf(keyOr(path), "register ids must be single values (line %d)", k.Line)
		case seen[k.Value]:
			p.addf(key, "is given twice (line %d)", k.Line)
		case val.Kind != yaml.ScalarNode:
			p.addf(key, "must be a variable name (line %d)", val.Line)
		default:
			seen[k.Value] = true
			out = append(out, mapEntry{ID: k.Value, Variable: val.Value})
		}
	}
	v.Set(reflect.ValueOf(out))
}

func keyOr(path string) string {
	if path == "" {
		return "(file)"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// cleanYAMLError strips yaml.v3's "yaml: unmarshal errors:\n  line N:" noise.
func cleanYAMLError(err error) string {
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

// yamlFields maps each yaml tag of t to its field index.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" && f.IsExported() {
			m[tag] = i
		}
	}
	return m
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

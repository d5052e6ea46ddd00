package providers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"

	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/internal/strictyaml"
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
	strictyaml.Decode(doc.Content[0], reflect.ValueOf(f).Elem(), "", yamlOptions, p.addf)
}

var yamlOptions = strictyaml.Options{Hooks: map[reflect.Type]strictyaml.Hook{
	reflect.TypeFor[[]mapEntry](): decodeMapEntries,
}}

// decodeMapEntries decodes a mapping of scalars in file order.
func decodeMapEntries(n *yaml.Node, v reflect.Value, path string, report strictyaml.Report) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		report(strictyaml.KeyOr(path), "must be a mapping of register id to variable (line %d)", n.Line)
		return
	}
	var out []mapEntry
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := strictyaml.Join(path, k.Value)
		switch {
		case k.Kind != yaml.ScalarNode:
			report(strictyaml.KeyOr(path), "register ids must be single values (line %d)", k.Line)
		case seen[k.Value]:
			report(key, "is given twice (line %d)", k.Line)
		case val.Kind != yaml.ScalarNode:
			report(key, "must be a variable name (line %d)", val.Line)
		default:
			seen[k.Value] = true
			out = append(out, mapEntry{ID: k.Value, Variable: val.Value})
		}
	}
	v.Set(reflect.ValueOf(out))
}

package providers

import (
	"embed"
	"fmt"
	"path"
)

// builtinSpecs are the shipped spec providers, one YAML file each.
//
//go:embed specs/*.yaml
var builtinSpecs embed.FS

// RegisterBuiltin registers the shipped providers on r: the specs
// generic-json and acme-registers (providers/specs/) and the code decoder
// lorawan-ttn (LoRaWAN). A name already registered is an error.
func RegisterBuiltin(r *Registry) error {
	specs, err := BuiltinSpecs()
	if err != nil {
		return err
	}
	for _, s := range specs {
		if err := r.Register(s.Name(), s); err != nil {
			return err
		}
	}
	return r.Register(LoRaWANProvider, LoRaWAN{})
}

// BuiltinSpecs parses the shipped spec providers (generic-json and
// acme-registers), sorted by file name. They are valid by construction;
// the error is there for the tests that prove it.
func BuiltinSpecs() ([]*Spec, error) {
	entries, err := builtinSpecs.ReadDir("specs")
	if err != nil {
		return nil, fmt.Errorf("reading built-in specs: %w", err)
	}
	out := make([]*Spec, 0, len(entries))
	for _, e := range entries {
		data, err := builtinSpecs.ReadFile(path.Join("specs", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading built-in spec %s: %w", e.Name(), err)
		}
		s, err := ParseSpec(data)
		if err != nil {
			return nil, fmt.Errorf("parsing built-in spec %s: %w", e.Name(), err)
		}
		out = append(out, s)
	}
	return out, nil
}

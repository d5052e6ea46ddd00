package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/internal/strictyaml"
)

// DefaultFile is the configuration file read when no path is given and it
// exists in the working directory.
const DefaultFile = "stackvps.yaml"

// EnvPrefix starts every environment variable named after a key path.
const EnvPrefix = "STACKVPS_"

// Variables that start with EnvPrefix but are not configuration keys.
var reservedEnv = []string{"STACKVPS_CONFIG", "STACKVPS_TEST_"}

// Aliases maps the contract variables of the old system (and the new
// KAFKA_BROKERS and SCHEMA_REGISTRY_URL) to the key they set. A STACKVPS_
// variable for the same key wins over its alias.
var Aliases = map[string]string{
	"DATABASE_URL":        "database.url",
	"MQTT_BROKER":         "mqtt.broker",
	"MQTT_PORT":           "mqtt.port",
	"MQTT_USERNAME":       "mqtt.username",
	"MQTT_PASSWORD":       "mqtt.password",
	"KAFKA_BROKERS":       "kafka.brokers",
	"SCHEMA_REGISTRY_URL": "schema_registry.url",
}

// Load builds the configuration: [Default], then the YAML file at path (when
// path is empty, DefaultFile if it exists), then the environment given as
// "KEY=value" strings (os.Environ() in production). It returns every problem
// found, decoding and validation alike, joined; [Problems] splits them.
func Load(path string, environ []string) (*Config, error) {
	cfg := Default()
	var p problems
	if path == "" {
		if _, err := os.Stat(DefaultFile); err == nil {
			path = DefaultFile
		}
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading config file: %w", err)
		}
		decodeYAML(data, &cfg, &p)
	}
	applyEnv(environ, &cfg, &p)
	// A value that failed to decode kept its valid default, so validating now
	// adds only real problems and every one is reported at once.
	if err := cfg.Validate(); err != nil {
		p.errs = append(p.errs, Problems(err)...)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// decodeYAML decodes data onto cfg key by key, so every unknown key and every
// bad value is reported with its full path, not only the first.
func decodeYAML(data []byte, cfg *Config, p *problems) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return // An empty file is the defaults.
		}
		p.addf("(file)", "is not valid YAML: %v", err)
		return
	}
	if len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return
	}
	strictyaml.Decode(root, reflect.ValueOf(cfg).Elem(), "", strictyaml.Options{MergeMaps: true}, p.addf)
}

// leaf is one settable key of the tree.
type leaf struct {
	path  string
	index []int
	typ   reflect.Type
}

// Keys returns every key path of the configuration tree, sorted, with the
// environment variable that sets it.
func Keys() map[string]string {
	out := map[string]string{}
	for _, l := range leaves() {
		out[l.path] = EnvName(l.path)
	}
	return out
}

// EnvName returns the STACKVPS_ variable that sets a key path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

func leaves() []leaf {
	var out []leaf
	var walk func(t reflect.Type, path string, index []int)
	walk = func(t reflect.Type, path string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := strictyaml.Name(f)
			if name == "" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			key := strictyaml.Join(path, name)
			if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
				walk(f.Type, key, idx)
				continue
			}
			out = append(out, leaf{path: key, index: idx, typ: f.Type})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

// applyEnv applies aliases first, then STACKVPS_ variables, and reports
// unknown STACKVPS_ variables.
func applyEnv(environ []string, cfg *Config, p *problems) {
	byEnv := map[string]leaf{}
	byPath := map[string]leaf{}
	for _, l := range leaves() {
		byEnv[EnvName(l.path)] = l
		byPath[l.path] = l
	}
	env := map[string]string{}
	var names []string
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, dup := env[k]; !dup {
			names = append(names, k)
		}
		env[k] = v
	}
	sort.Strings(names)
	root := reflect.ValueOf(cfg).Elem()
	aliasNames := make([]string, 0, len(Aliases))
	for a := range Aliases {
		aliasNames = append(aliasNames, a)
	}
	sort.Strings(aliasNames)
	for _, a := range aliasNames {
		if v, ok := env[a]; ok && v != "" {
			l := byPath[Aliases[a]]
			setFromEnv(root.FieldByIndex(l.index), v, l.path, a, p)
		}
	}
	for _, name := range names {
		if !strings.HasPrefix(name, EnvPrefix) || reserved(name) {
			continue
		}
		l, ok := byEnv[name]
		if !ok {
			p.addf(name, "is not a configuration variable (see `stackvps config keys`)")
			continue
		}
		setFromEnv(root.FieldByIndex(l.index), env[name], l.path, name, p)
	}
}

func reserved(name string) bool {
	for _, r := range reservedEnv {
		if name == r || (strings.HasSuffix(r, "_") && strings.HasPrefix(name, r)) {
			return true
		}
	}
	return false
}

// setFromEnv decodes an environment string through the same YAML decoding as
// the file, so both accept the same spellings. Lists are comma-separated.
func setFromEnv(v reflect.Value, s, path, envName string, p *problems) {
	var n yaml.Node
	if v.Kind() == reflect.Map {
		p.addf(path, "cannot be set from the environment (%s); use the file", envName)
		return
	}
	if v.Kind() == reflect.Slice {
		if v.Type().Elem().Kind() != reflect.String {
			p.addf(path, "cannot be set from the environment (%s); use the file", envName)
			return
		}
		n = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: part})
			}
		}
	} else {
		n = yaml.Node{Kind: yaml.ScalarNode, Value: s}
		if v.Kind() == reflect.String {
			n.Tag = "!!str"
		}
	}
	fresh := reflect.New(v.Type())
	if err := n.Decode(fresh.Interface()); err != nil {
		p.addf(path, "from %s: %s", envName, strictyaml.CleanError(err))
		return
	}
	v.Set(fresh.Elem())
}

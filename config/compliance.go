package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/internal/strictyaml"
)

// Compliance configures what the compliance sources and configs share: the
// key that encrypts the regulators' credentials stored in
// compliance_configs, and the regulators' sources themselves.
type Compliance struct {
	// CredentialsKey is the AES-256 key, base64 (standard encoding, 32
	// bytes), that encrypts every credential stored in compliance_configs.
	// Set it from the environment (STACKVPS_COMPLIANCE_CREDENTIALS_KEY),
	// never in a file under version control. Empty: configs with
	// credentials cannot be created or submitted.
	CredentialsKey Secret `yaml:"credentials_key"`
	// Sources overrides the built-in regulator sources (dga-subterraneas,
	// dga-superficiales-flujometro, sma) or defines new ones, keyed by the
	// source code. An entry for a built-in code changes only the keys it
	// gives (its endpoint, say: that is how tests, demos and staging point
	// DGA at the reference regulator); an entry for a new code defines a
	// source that speaks an existing protocol (dga-mee, sma-registros) and
	// must give at least protocol, endpoint and variables. Default: none
	// (the built-ins as package compliance documents them). The environment
	// cannot set it; use the file.
	Sources SourceConfigs `yaml:"sources"`
}

// SourceConfigs are compliance sources by code.
type SourceConfigs map[string]SourceConfig

// UnmarshalYAML decodes every source strictly, reporting every unknown or
// badly typed key of every source with its code ("dga-x.endpont: unknown
// key").
func (m *SourceConfigs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("must be a mapping of source codes to sources (line %d)", n.Line)
	}
	out := SourceConfigs{}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		code := n.Content[i].Value
		if _, dup := out[code]; dup {
			errs = append(errs, fmt.Errorf("%s: is given twice (line %d)", code, n.Content[i].Line))
			continue
		}
		sc, err := decodeSource(n.Content[i+1], code)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[code] = sc
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	*m = out
	return nil
}

// SourceConfig defines or overrides one compliance source. Every key is
// optional for an override of a built-in source: an empty or zero value
// keeps the built-in's.
type SourceConfig struct {
	// Name is a human name ("DGA MEE subterráneas").
	Name string `yaml:"name"`
	// Protocol is the client that talks to the regulator: dga-mee or
	// sma-registros. Required for a new source.
	Protocol string `yaml:"protocol"`
	// Endpoint is the full URL requests go to (for sma-registros, the API
	// base such as https://conexiones.sma.gob.cl/api/v1). Required for a
	// new source.
	Endpoint string `yaml:"endpoint"`
	// TimeZone is the IANA zone measurement dates and times are rendered
	// in (DGA: Etc/GMT+4, SMA: America/Santiago).
	TimeZone string `yaml:"time_zone"`
	// Variables are the canonical variables the source takes: flow,
	// totalizer, level. Required for a new source.
	Variables []string `yaml:"variables"`
	// BodyKey is, for dga-mee, the key of the measurement object in the
	// request body (medicionSubterranea, medicionSuperficialFlujometro).
	// A shortcut for settings.body_key.
	BodyKey string `yaml:"body_key"`
	// Settings are protocol-specific settings, merged key by key over the
	// built-in's (see package compliance for the keys and defaults).
	Settings map[string]any `yaml:"settings"`
	// Schema is the JSON Schema (JSON text) every request body must
	// satisfy. Give Schema or SchemaFile, not both; a new source needs one.
	Schema string `yaml:"schema"`
	// SchemaFile is a path to a JSON Schema file, read at start-up.
	SchemaFile string `yaml:"schema_file"`
	// MinInterval is the least time between two requests to the source.
	MinInterval Duration `yaml:"min_interval"`
	// RequestTimeout bounds one request.
	RequestTimeout Duration `yaml:"request_timeout"`
	// RetryRejectedAfter is how long after a rejection the slot is retried.
	RetryRejectedAfter Duration `yaml:"retry_rejected_after"`
	// MaxAttempts is how many attempts a slot gets before it stays
	// rejected.
	MaxAttempts int `yaml:"max_attempts"`
	// Active turns the source off (false) or on (true); absent keeps the
	// built-in's (true) or, for a new source, true.
	Active *bool `yaml:"active"`
}

// UnmarshalYAML decodes one source strictly: an unknown or misspelt key is
// an error naming it, as everywhere else in the file.
func (s *SourceConfig) UnmarshalYAML(n *yaml.Node) error {
	sc, err := decodeSource(n, "")
	if err != nil {
		return err
	}
	*s = sc
	return nil
}

func decodeSource(n *yaml.Node, path string) (SourceConfig, error) {
	type plain SourceConfig // the same keys, without UnmarshalYAML
	var errs []error
	var out plain
	strictyaml.Decode(n, reflect.ValueOf(&out).Elem(), path, strictyaml.Options{}, func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	})
	return SourceConfig(out), errors.Join(errs...)
}

// ComplianceBuiltinSources are the codes of the sources package compliance
// builds in; an entry of compliance.sources with another code defines a new
// source.
var ComplianceBuiltinSources = []string{"dga-subterraneas", "dga-superficiales-flujometro", "sma"}

// ComplianceProtocols are the protocols a compliance source may use.
var ComplianceProtocols = []string{"dga-mee", "sma-registros"}

// ComplianceVariables are the canonical variables a source may take.
var ComplianceVariables = []string{"flow", "totalizer", "level"}

var sourceCode = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

func defaultCompliance() Compliance {
	return Compliance{Sources: SourceConfigs{}}
}

func (c Compliance) validate(p *problems) {
	codes := make([]string, 0, len(c.Sources))
	for code := range c.Sources {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	for _, code := range codes {
		c.Sources[code].validate(p, "compliance.sources."+code, code)
	}
}

func (s SourceConfig) validate(p *problems, key, code string) {
	if !sourceCode.MatchString(code) {
		p.addf(key, "a source code must be lower case letters, digits, '-' and '_'")
	}
	if !slices.Contains(ComplianceBuiltinSources, code) {
		for _, req := range []struct {
			name  string
			empty bool
		}{{"protocol", s.Protocol == ""}, {"endpoint", s.Endpoint == ""}, {"variables", len(s.Variables) == 0},
			{"schema", s.Schema == "" && s.SchemaFile == ""}} {
			if req.empty {
				p.addf(key+"."+req.name, "is required for a source that is not built in (%v)", ComplianceBuiltinSources)
			}
		}
	}
	if s.Protocol != "" && !slices.Contains(ComplianceProtocols, s.Protocol) {
		p.addf(key+".protocol", "must be one of %v; got %q", ComplianceProtocols, s.Protocol)
	}
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.addf(key+".endpoint", "must be an http(s) URL; got %q", s.Endpoint)
		}
	}
	if s.TimeZone != "" {
		if _, err := time.LoadLocation(s.TimeZone); err != nil {
			p.addf(key+".time_zone", "unknown time zone %q", s.TimeZone)
		}
	}
	for _, v := range s.Variables {
		if !slices.Contains(ComplianceVariables, v) {
			p.addf(key+".variables", "must be among %v; got %q", ComplianceVariables, v)
		}
	}
	if s.Schema != "" && s.SchemaFile != "" {
		p.addf(key+".schema", "give schema or schema_file, not both")
	}
	if s.Schema != "" && !json.Valid([]byte(s.Schema)) {
		p.addf(key+".schema", "is not valid JSON")
	}
	if s.SchemaFile != "" {
		b, err := os.ReadFile(s.SchemaFile)
		switch {
		case err != nil:
			p.addf(key+".schema_file", "cannot be read: %v", err)
		case !json.Valid(b):
			p.addf(key+".schema_file", "%s is not valid JSON", s.SchemaFile)
		}
	}
	if s.Settings != nil {
		if _, err := json.Marshal(s.Settings); err != nil {
			p.addf(key+".settings", "cannot be written as JSON: %v", err)
		}
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"min_interval", s.MinInterval}, {"request_timeout", s.RequestTimeout}, {"retry_rejected_after", s.RetryRejectedAfter}} {
		if d.v < 0 {
			p.addf(key+"."+d.name, "must not be negative; got %s", d.v)
		}
	}
	if s.MaxAttempts < 0 {
		p.addf(key+".max_attempts", "must not be negative; got %d", s.MaxAttempts)
	}
}

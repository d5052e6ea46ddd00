package compliance

import (
	"embed"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/stackvps/stackvps/config"
)

// Protocol names.
const (
	// ProtocolDGA is DGA's MEE REST interface (Manual Técnico DGA 1/2025).
	ProtocolDGA = "dga-mee"
	// ProtocolSMA is SMA's REST interface (Res. Ex. SMA 254/2020).
	ProtocolSMA = "sma-registros"
)

// Canonical variables a source may take.
const (
	VarFlow      = "flow"      // instantaneous flow, L/s
	VarTotalizer = "totalizer" // accumulated volume, m3
	VarLevel     = "level"     // water-table depth, m
)

// Built-in source codes.
const (
	SourceDGASubterraneas  = "dga-subterraneas"
	SourceDGAFlujometro    = "dga-superficiales-flujometro"
	SourceSMA              = "sma"
	defaultDGAEndpointBase = "https://apimee.mop.gob.cl/api/v1/mediciones"
)

// A Source is one regulator endpoint slots are reported to: the protocol
// that talks to it, where it is, the zone its dates and times are rendered
// in, the variables it takes, the JSON Schema every request body must
// satisfy and how fast and how often it may be called. It mirrors a row of
// compliance_sources.
type Source struct {
	Code, Name, Protocol, Endpoint, TimeZone string
	// Variables are the canonical variables the source takes: flow,
	// totalizer, level.
	Variables []string
	// Schema is the JSON Schema of the request body.
	Schema json.RawMessage
	// Settings are protocol-specific (DGASettings, SMASettings).
	Settings json.RawMessage
	// MinInterval is the least time between two requests to the source;
	// RequestTimeout bounds one request; RetryRejectedAfter is how long
	// after a rejection a slot is tried again.
	MinInterval, RequestTimeout, RetryRejectedAfter time.Duration
	// MaxAttempts is how many attempts a slot gets before a rejection is
	// final.
	MaxAttempts int
	// Active is false for a source that must not be submitted to.
	Active bool
}

// Takes reports whether the source takes the canonical variable v.
func (s Source) Takes(v string) bool { return slices.Contains(s.Variables, v) }

// Location loads the source's time zone.
func (s Source) Location() (*time.Location, error) {
	loc, err := time.LoadLocation(s.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("loading time zone %q of source %s: %w", s.TimeZone, s.Code, err)
	}
	return loc, nil
}

//go:embed schemas/*.json
var schemaFiles embed.FS

// BuiltinSources returns the built-in sources, before any configuration.
// The values marked UNCONFIRMED in doc.go are defaults that configuration
// may change.
func BuiltinSources() []Source {
	schema := func(name string) json.RawMessage {
		b, err := schemaFiles.ReadFile("schemas/" + name + ".json")
		if err != nil {
			panic(fmt.Sprintf("compliance: embedded schema %s: %v", name, err)) // a build defect
		}
		return b
	}
	settings := func(v any) json.RawMessage {
		b, err := json.Marshal(v)
		if err != nil {
			panic(fmt.Sprintf("compliance: built-in settings: %v", err)) // a build defect
		}
		return b
	}
	sub := DefaultDGASettings()
	sub.BodyKey = "medicionSubterranea"
	sub.EmptyLevel = true
	flu := DefaultDGASettings()
	flu.BodyKey = "medicionSuperficialFlujometro"
	return []Source{
		{
			Code: SourceDGASubterraneas, Name: "DGA MEE aguas subterráneas", Protocol: ProtocolDGA,
			Endpoint: defaultDGAEndpointBase + "/subterraneas", TimeZone: "Etc/GMT+4",
			Variables: []string{VarFlow, VarTotalizer, VarLevel},
			Schema:    schema(SourceDGASubterraneas), Settings: settings(sub),
			MinInterval: time.Second, RequestTimeout: 15 * time.Second, RetryRejectedAfter: 24 * time.Hour,
			MaxAttempts: 7, Active: true,
		},
		{
			Code: SourceDGAFlujometro, Name: "DGA MEE aguas superficiales, flujómetro", Protocol: ProtocolDGA,
			Endpoint: defaultDGAEndpointBase + "/superficiales/flujometro", TimeZone: "Etc/GMT+4",
			Variables: []string{VarFlow, VarTotalizer},
			Schema:    schema(SourceDGAFlujometro), Settings: settings(flu),
			MinInterval: time.Second, RequestTimeout: 15 * time.Second, RetryRejectedAfter: 24 * time.Hour,
			MaxAttempts: 7, Active: true,
		},
		{
			Code: SourceSMA, Name: "SMA conexión en línea (Res. Ex. 254/2020)", Protocol: ProtocolSMA,
			Endpoint: "https://conexiones.sma.gob.cl/api/v1", TimeZone: "America/Santiago",
			Variables: []string{VarFlow, VarTotalizer},
			Schema:    schema(SourceSMA), Settings: settings(DefaultSMASettings()),
			MinInterval: time.Second, RequestTimeout: 15 * time.Second, RetryRejectedAfter: time.Hour,
			MaxAttempts: 7, Active: true,
		},
	}
}

// Sources returns the built-in sources (dga-subterraneas,
// dga-superficiales-flujometro, sma) merged with the ones defined or
// overridden in cfg (config.Compliance.Sources), validated, sorted by code.
// Every problem is reported, each naming its key
// ("compliance.sources.<code>.endpoint: ...").
func Sources(cfg config.Compliance) ([]Source, error) {
	byCode := map[string]Source{}
	for _, s := range BuiltinSources() {
		byCode[s.Code] = s
	}
	var errs problems
	failed := map[string]bool{}
	for code, sc := range cfg.Sources {
		key := "compliance.sources." + code
		base, builtin := byCode[code]
		if !builtin {
			base = Source{Code: code, Name: code, Active: true, Settings: json.RawMessage("{}")}
			if sc.Protocol == "" {
				errs.addf(key+".protocol", "is required for a source that is not built in (built in: %s, %s, %s)",
					SourceDGASubterraneas, SourceDGAFlujometro, SourceSMA)
				failed[code] = true
				continue
			}
			if sc.Schema == "" && sc.SchemaFile == "" {
				errs.addf(key+".schema", "a source that is not built in needs schema or schema_file")
				failed[code] = true
				continue
			}
		}
		s, err := merge(base, sc, key)
		if err != nil {
			errs.add(err)
			failed[code] = true
			continue
		}
		byCode[code] = s
	}
	out := make([]Source, 0, len(byCode))
	for _, s := range byCode {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	for _, s := range out {
		if failed[s.Code] {
			continue
		}
		for _, err := range s.validate("compliance.sources." + s.Code) {
			errs.add(err)
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// merge lays the configured keys of sc over base.
func merge(base Source, sc config.SourceConfig, key string) (Source, error) {
	s := base
	s.Variables = slices.Clone(base.Variables)
	if sc.Name != "" {
		s.Name = sc.Name
	}
	if sc.Protocol != "" {
		s.Protocol = sc.Protocol
	}
	if sc.Endpoint != "" {
		s.Endpoint = sc.Endpoint
	}
	if sc.TimeZone != "" {
		s.TimeZone = sc.TimeZone
	}
	if len(sc.Variables) > 0 {
		s.Variables = slices.Clone(sc.Variables)
	}
	switch {
	case sc.Schema != "":
		s.Schema = json.RawMessage(sc.Schema)
	case sc.SchemaFile != "":
		b, err := os.ReadFile(sc.SchemaFile)
		if err != nil {
			return s, fmt.Errorf("%s.schema_file: %w", key, err)
		}
		s.Schema = b
	}
	if len(sc.Settings) > 0 || sc.BodyKey != "" {
		m := map[string]any{}
		if len(base.Settings) > 0 {
			if err := json.Unmarshal(base.Settings, &m); err != nil {
				return s, fmt.Errorf("%s.settings: built-in settings: %w", key, err)
			}
		}
		for k, v := range sc.Settings {
			m[k] = v
		}
		if sc.BodyKey != "" {
			m["body_key"] = sc.BodyKey
		}
		b, err := json.Marshal(m)
		if err != nil {
			return s, fmt.Errorf("%s.settings: %w", key, err)
		}
		s.Settings = b
	}
	if sc.MinInterval != 0 {
		s.MinInterval = sc.MinInterval.Std()
	}
	if sc.RequestTimeout != 0 {
		s.RequestTimeout = sc.RequestTimeout.Std()
	}
	if sc.RetryRejectedAfter != 0 {
		s.RetryRejectedAfter = sc.RetryRejectedAfter.Std()
	}
	if sc.MaxAttempts != 0 {
		s.MaxAttempts = sc.MaxAttempts
	}
	if sc.Active != nil {
		s.Active = *sc.Active
	}
	return s, nil
}

// Validate checks a source as the submitter needs it: a known protocol, an
// http(s) endpoint, a loadable zone, known variables, a schema that
// compiles, settings its protocol understands and sane limits. Sources
// read back from compliance_sources can be checked with it.
func (s Source) Validate() error {
	var errs problems
	for _, err := range s.validate("source " + s.Code) {
		errs.add(err)
	}
	return errs.err()
}

func (s Source) validate(key string) []error {
	var errs []error
	add := func(k, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, k, fmt.Sprintf(format, args...)))
	}
	if !slices.Contains(config.ComplianceProtocols, s.Protocol) {
		add("protocol", "must be one of %v; got %q", config.ComplianceProtocols, s.Protocol)
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("endpoint", "must be an http(s) URL; got %q", s.Endpoint)
	}
	if _, err := time.LoadLocation(s.TimeZone); err != nil || s.TimeZone == "" {
		add("time_zone", "unknown time zone %q", s.TimeZone)
	}
	if len(s.Variables) == 0 {
		add("variables", "must name at least one of %v", config.ComplianceVariables)
	}
	for _, v := range s.Variables {
		if !slices.Contains(config.ComplianceVariables, v) {
			add("variables", "must be among %v; got %q", config.ComplianceVariables, v)
		}
	}
	if _, err := compileSchema(s.Schema); err != nil {
		add("schema", "%v", err)
	}
	switch s.Protocol {
	case ProtocolDGA:
		st, err := s.DGASettings()
		if err != nil {
			add("settings", "%v", err)
		} else if st.BodyKey == "" {
			add("body_key", "is required for protocol %s", ProtocolDGA)
		}
		if !s.Takes(VarFlow) || !s.Takes(VarTotalizer) {
			add("variables", "protocol %s needs flow and totalizer; got %v", ProtocolDGA, s.Variables)
		}
	case ProtocolSMA:
		st, err := s.SMASettings()
		if err != nil {
			add("settings", "%v", err)
			break
		}
		for _, v := range s.Variables {
			if _, ok := st.parameter(v); !ok {
				add("settings", "parameters has no entry for variable %q", v)
			}
		}
	}
	if s.MinInterval < 0 {
		add("min_interval", "must not be negative; got %s", s.MinInterval)
	}
	if s.RequestTimeout <= 0 {
		add("request_timeout", "must be positive; got %s", s.RequestTimeout)
	}
	if s.RetryRejectedAfter <= 0 {
		add("retry_rejected_after", "must be positive; got %s", s.RetryRejectedAfter)
	}
	if s.MaxAttempts < 1 {
		add("max_attempts", "must be at least 1; got %d", s.MaxAttempts)
	}
	return errs
}

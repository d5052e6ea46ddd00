package compliance_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/config"
)

func byCode(srcs []compliance.Source) map[string]compliance.Source {
	m := map[string]compliance.Source{}
	for _, s := range srcs {
		m[s.Code] = s
	}
	return m
}

func TestBuiltinSources(t *testing.T) {
	srcs, err := compliance.Sources(config.Default().Compliance)
	require.NoError(t, err)
	m := byCode(srcs)
	require.Len(t, m, 3)

	sub := m["dga-subterraneas"]
	require.Equal(t, "dga-mee", sub.Protocol)
	require.Equal(t, "https://apimee.mop.gob.cl/api/v1/mediciones/subterraneas", sub.Endpoint)
	require.Equal(t, "Etc/GMT+4", sub.TimeZone)
	require.Equal(t, []string{"flow", "totalizer", "level"}, sub.Variables)
	require.Equal(t, time.Second, sub.MinInterval)
	require.Equal(t, 15*time.Second, sub.RequestTimeout)
	require.Equal(t, 24*time.Hour, sub.RetryRejectedAfter)
	require.Equal(t, 7, sub.MaxAttempts)
	require.True(t, sub.Active)
	st, err := sub.DGASettings()
	require.NoError(t, err)
	require.Equal(t, "medicionSubterranea", st.BodyKey)
	require.Equal(t, "emeltec3", st.TimeStampOrigen)
	require.Equal(t, 2, st.Decimals)
	require.True(t, st.EmptyLevel)

	flu := m["dga-superficiales-flujometro"]
	require.Equal(t, "https://apimee.mop.gob.cl/api/v1/mediciones/superficiales/flujometro", flu.Endpoint)
	require.Equal(t, []string{"flow", "totalizer"}, flu.Variables)
	st, err = flu.DGASettings()
	require.NoError(t, err)
	require.Equal(t, "medicionSuperficialFlujometro", st.BodyKey)
	require.False(t, st.EmptyLevel)

	sma := m["sma"]
	require.Equal(t, "sma-registros", sma.Protocol)
	require.Equal(t, "https://conexiones.sma.gob.cl/api/v1", sma.Endpoint)
	require.Equal(t, "America/Santiago", sma.TimeZone)
	require.Equal(t, time.Hour, sma.RetryRejectedAfter)
	sst, err := sma.SMASettings()
	require.NoError(t, err)
	require.Equal(t, []compliance.SMAParameter{{Variable: "flow", Name: "Q", Unit: "l/s"}, {Variable: "totalizer", Name: "VA", Unit: "m3"}}, sst.Parameters)

	var codes []string
	for _, s := range compliance.BuiltinSources() {
		codes = append(codes, s.Code)
	}
	require.ElementsMatch(t, config.ComplianceBuiltinSources, codes, "config knows the built-in codes")
	for _, s := range srcs {
		require.NoError(t, s.Validate(), s.Code)
		require.True(t, json.Valid(s.Schema))
	}
}

func TestSourcesOverrideAndDefine(t *testing.T) {
	dir := t.TempDir()
	schemaFile := filepath.Join(dir, "canal.json")
	require.NoError(t, os.WriteFile(schemaFile, []byte(`{"type":"object","required":["medicionSuperficialCanal"]}`), 0o600))
	off := false
	cfg := config.Default().Compliance
	cfg.Sources = map[string]config.SourceConfig{
		"dga-subterraneas": {Endpoint: "http://127.0.0.1:8081/api/v1/mediciones/subterraneas"},
		"sma":              {Active: &off, Settings: map[string]any{"token_margin": "1m"}},
		"dga-canal": {
			Name: "DGA canal", Protocol: "dga-mee", Endpoint: "https://apimee.mop.gob.cl/api/v1/mediciones/superficiales/canal",
			TimeZone: "Etc/GMT+4", Variables: []string{"flow", "totalizer"}, BodyKey: "medicionSuperficialCanal",
			SchemaFile: schemaFile, MinInterval: config.Duration(2 * time.Second), RequestTimeout: config.Duration(10 * time.Second),
			RetryRejectedAfter: config.Duration(24 * time.Hour), MaxAttempts: 3,
		},
	}
	srcs, err := compliance.Sources(cfg)
	require.NoError(t, err)
	m := byCode(srcs)
	require.Len(t, m, 4)

	sub := m["dga-subterraneas"]
	require.Equal(t, "http://127.0.0.1:8081/api/v1/mediciones/subterraneas", sub.Endpoint)
	require.Equal(t, "Etc/GMT+4", sub.TimeZone, "what the override does not give stays")
	require.Equal(t, 7, sub.MaxAttempts)
	st, err := sub.DGASettings()
	require.NoError(t, err)
	require.Equal(t, "medicionSubterranea", st.BodyKey)

	sma := m["sma"]
	require.False(t, sma.Active)
	sst, err := sma.SMASettings()
	require.NoError(t, err)
	require.Equal(t, "1m", sst.TokenMargin)
	require.Equal(t, "24h", sst.TokenTTL, "settings merge key by key")

	canal := m["dga-canal"]
	require.Equal(t, "dga-mee", canal.Protocol)
	require.True(t, canal.Active)
	require.Equal(t, 3, canal.MaxAttempts)
	require.Equal(t, 2*time.Second, canal.MinInterval)
	cst, err := canal.DGASettings()
	require.NoError(t, err)
	require.Equal(t, "medicionSuperficialCanal", cst.BodyKey)
	require.Equal(t, "emeltec3", cst.TimeStampOrigen, "protocol defaults apply to a new source")
	require.Contains(t, string(canal.Schema), "medicionSuperficialCanal")

	// The built-ins themselves are untouched by the override.
	for _, b := range compliance.BuiltinSources() {
		if b.Code == "dga-subterraneas" {
			require.Equal(t, "https://apimee.mop.gob.cl/api/v1/mediciones/subterraneas", b.Endpoint)
		}
	}
}

func TestSourcesErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name string
		srcs map[string]config.SourceConfig
		want []string
	}{
		{"new source without protocol", map[string]config.SourceConfig{"x": {Endpoint: "https://a.example/x"}},
			[]string{"compliance.sources.x.protocol: is required"}},
		{"new source without schema", map[string]config.SourceConfig{"x": {Protocol: "dga-mee", Endpoint: "https://a.example/x"}},
			[]string{"compliance.sources.x.schema: "}},
		{"new dga source without endpoint, variables and body key", map[string]config.SourceConfig{"x": {Protocol: "dga-mee", Schema: `{}`}},
			[]string{"compliance.sources.x.endpoint: ", "compliance.sources.x.variables: ", "compliance.sources.x.body_key: ", "compliance.sources.x.time_zone: "}},
		{"bad settings", map[string]config.SourceConfig{"dga-subterraneas": {Settings: map[string]any{"time_stamp_origen": "utc"}}},
			[]string{"compliance.sources.dga-subterraneas.settings: time_stamp_origen"}},
		{"unknown setting", map[string]config.SourceConfig{"dga-subterraneas": {Settings: map[string]any{"decimal": 2}}},
			[]string{"compliance.sources.dga-subterraneas.settings: ", "unknown field"}},
		{"schema that does not compile", map[string]config.SourceConfig{"sma": {Schema: `{"type":"nope"}`}},
			[]string{"compliance.sources.sma.schema: "}},
		{"sma variable without a parameter", map[string]config.SourceConfig{"sma": {Variables: []string{"flow", "level"}}},
			[]string{`compliance.sources.sma.settings: parameters has no entry for variable "level"`}},
		{"missing schema file", map[string]config.SourceConfig{"sma": {SchemaFile: "/nonexistent/s.json"}},
			[]string{"compliance.sources.sma.schema_file: "}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.Default().Compliance
			cfg.Sources = c.srcs
			_, err := compliance.Sources(cfg)
			require.Error(t, err)
			for _, w := range c.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestConfigSourcesFromYAML(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(f, []byte(`compliance:
  sources:
    dga-subterraneas:
      endpoint: http://localhost:8081/api/v1/mediciones/subterraneas
      request_timeout: 5s
`), 0o600))
	cfg, err := config.Load(f, nil)
	require.NoError(t, err)
	srcs, err := compliance.Sources(cfg.Compliance)
	require.NoError(t, err)
	sub := byCode(srcs)["dga-subterraneas"]
	require.Equal(t, "http://localhost:8081/api/v1/mediciones/subterraneas", sub.Endpoint)
	require.Equal(t, 5*time.Second, sub.RequestTimeout)

	require.NoError(t, os.WriteFile(f, []byte(`compliance:
  sources:
    dga-subterraneas:
      endpont: http://localhost:8081/
    sma:
      max_attempts: many
`), 0o600))
	_, err = config.Load(f, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "compliance.sources: dga-subterraneas.endpont: unknown key")
	require.Contains(t, err.Error(), "sma.max_attempts: ")

	require.NoError(t, os.WriteFile(f, []byte(`compliance:
  sources:
    Bad_Code:
      protocol: soap
      endpoint: ftp://x
      time_zone: Mars/Olympus
      min_interval: -1s
`), 0o600))
	_, err = config.Load(f, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "compliance.sources.Bad_Code.variables: is required")
	for _, w := range []string{"compliance.sources.Bad_Code: a source code", "compliance.sources.Bad_Code.protocol", "compliance.sources.Bad_Code.endpoint", "compliance.sources.Bad_Code.time_zone", "compliance.sources.Bad_Code.min_interval"} {
		require.Contains(t, err.Error(), w)
	}
}

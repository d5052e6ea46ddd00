package providers_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/providers"
)

func TestParseSpecGoodFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/specs/*.good.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			s, err := providers.ParseSpec(data)
			require.NoError(t, err)
			require.NotEmpty(t, s.Name())
		})
	}
}

func TestParseSpecBadFiles(t *testing.T) {
	cases := []struct {
		file string
		// errContains lists substrings that must each appear in the error.
		errContains []string
		// is lists sentinels the error must match.
		is []error
	}{
		{file: "unknown-keys.bad.yaml", errContains: []string{
			`devise: unknown key (line 2); did you mean "device"?`,
			`time.fromat: unknown key (line 5); did you mean "format"?`,
			`variables[0].unti: unknown key (line 9); did you mean "unit"?`,
		}},
		{file: "unknown-unit.bad.yaml", errContains: []string{
			`variables[1].unit: unknown unit "furlongs" for level; known: cm, ft, in, m, mm`,
		}, is: []error{providers.ErrUnknownUnit}},
		{file: "unknown-variable.bad.yaml", errContains: []string{
			`variables[0].variable: unknown variable "flw"; known: battery, conductivity, flow, level`,
		}},
		{file: "both-modes.bad.yaml", errContains: []string{"registers: cannot be given together with variables"}},
		{file: "neither-mode.bad.yaml", errContains: []string{"(file): needs variables or registers"}},
		{file: "bad-time-format.bad.yaml", errContains: []string{
			`time.format: must be rfc3339, unix_s, unix_ms, unix_us or layout:<Go time layout>; got "iso8601"`,
		}},
		{file: "bad-layout.bad.yaml", errContains: []string{`time.format: layout "15:04:05" must give a full date`}},
		{file: "bad-timezone.bad.yaml", errContains: []string{`time.timezone: unknown time zone "Mars/Olympus_Mons"`}},
		{file: "timezone-without-layout.bad.yaml", errContains: []string{"time.timezone: applies only to a layout: format"}},
		{file: "variable-problems.bad.yaml", errContains: []string{
			`name: must be lowercase letters`,
			`format: must be json (binary formats are code decoders); got "protobuf"`,
			"variables[0].path: must not be empty",
			"variables[0]: give unit or unit_path, not both",
			"variables[1].variable: flow is already read by variables[0]",
			"variables[1].scale: must be a finite non-zero number; got 0",
			"variables[2]: needs unit or unit_path",
		}},
		{file: "registers-problems.bad.yaml", errContains: []string{
			"registers.path: must not be empty",
			"registers: give unit or fixed_unit, not both",
			"registers.map.Q2: flow is already mapped from Q",
			`registers.map.T: unknown variable "temprature"`,
			`registers.required[0]: "level" is not mapped by registers.map (mapped: flow)`,
			"registers.required[2]: flow is given twice",
		}},
		{file: "registers-fixed-unit.bad.yaml", errContains: []string{
			`registers.fixed_unit: unknown unit "cm" for flow; known: L/h`, "(registers.map.Q)",
		}, is: []error{providers.ErrUnknownUnit}},
		{file: "registers-empty-map.bad.yaml", errContains: []string{"registers.map: must map at least one register id"}},
		{file: "wrong-types.bad.yaml", errContains: []string{
			"name: must be a single value (line 1)",
			"variables: must be a list (line 3)",
		}},
		{file: "wrong-types2.bad.yaml", errContains: []string{
			"variables[0].scale: cannot unmarshal !!str `lots` into float64 (line 6)",
			"variables[0].optional: cannot unmarshal !!str `maybe` into bool (line 7)",
		}},
		{file: "duplicate-key.bad.yaml", errContains: []string{"name: is given twice (line 2)"}},
		{file: "not-yaml.bad.yaml", errContains: []string{"(file): is not valid YAML"}},
		{file: "empty.bad.yaml", errContains: []string{"(file): is empty"}},
		{file: "two-documents.bad.yaml", errContains: []string{"(file): must hold one YAML document (one spec per file)"}},
	}
	listed := map[string]bool{}
	for _, c := range cases {
		listed[c.file] = true
		t.Run(c.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/specs", c.file))
			require.NoError(t, err)
			s, err := providers.ParseSpec(data)
			require.Error(t, err)
			require.Nil(t, s)
			for _, want := range c.errContains {
				require.Contains(t, err.Error(), want)
			}
			for _, sentinel := range c.is {
				require.ErrorIs(t, err, sentinel)
			}
		})
	}
	files, err := filepath.Glob("testdata/specs/*.bad.yaml")
	require.NoError(t, err)
	for _, f := range files {
		require.True(t, listed[filepath.Base(f)], "%s has no case in TestParseSpecBadFiles", f)
	}
}

func TestParseSpecDefaults(t *testing.T) {
	cases := []struct {
		name string
		yaml string
	}{
		{"no format, no time, no device", "name: a\nvariables: [{variable: flow, path: q, unit: L/s}]\n"},
		{"empty time block is absent", "name: a\ntime:\nvariables: [{variable: flow, path: q, unit: L/s}]\n"},
		{"registers defaults", "name: a\nregisters: {path: r, map: {Q: flow}}\n"},
		{"ph needs no unit", "name: a\nvariables: [{variable: ph, path: p}]\n"},
		{"ph empty unit", "name: a\nvariables: [{variable: ph, path: p, unit: \"\"}]\n"},
		{"rfc3339 is the default time format", "name: a\ntime: {path: t}\nvariables: [{variable: flow, path: q, unit: L/s}]\n"},
		{"layout with time zone", "name: a\ntime: {path: t, format: \"layout:02/01/2006 15:04\", timezone: America/Santiago}\nvariables: [{variable: flow, path: q, unit: L/s}]\n"},
		{"numeric register ids", "name: a\nregisters: {path: r, map: {40001: level}, fixed_unit: cm}\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := providers.ParseSpec([]byte(c.yaml))
			require.NoError(t, err)
			require.Equal(t, "a", s.Name())
		})
	}
}

func TestLoadSpecDir(t *testing.T) {
	write := func(t *testing.T, dir, name, body string) {
		t.Helper()
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	const flowSpec = "name: %s\nvariables: [{variable: flow, path: q, unit: L/s}]\n"
	t.Run("good", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "b.yaml", strings.ReplaceAll(flowSpec, "%s", "vendor-b"))
		write(t, dir, "a.yml", strings.ReplaceAll(flowSpec, "%s", "vendor-a"))
		write(t, dir, "README.md", "not a spec")
		require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755))
		specs, err := providers.LoadSpecDir(dir)
		require.NoError(t, err)
		require.Len(t, specs, 2)
		require.Equal(t, "vendor-a", specs[0].Name())
		require.Equal(t, "vendor-b", specs[1].Name())
	})
	t.Run("every problem of every file, prefixed with the file", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "a.yaml", "name: a\nvariables: [{variable: flow, path: q, unit: furlongs}]\nbogus: 1\n")
		write(t, dir, "b.yaml", strings.ReplaceAll(flowSpec, "%s", "dup"))
		write(t, dir, "c.yaml", strings.ReplaceAll(flowSpec, "%s", "dup"))
		_, err := providers.LoadSpecDir(dir)
		require.Error(t, err)
		require.ErrorIs(t, err, providers.ErrUnknownUnit)
		for _, want := range []string{
			`a.yaml: bogus: unknown key (line 3)`,
			`a.yaml: variables[0].unit: unknown unit "furlongs" for flow`,
			`c.yaml: name: provider "dup" is already defined in b.yaml`,
		} {
			require.Contains(t, err.Error(), want)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		_, err := providers.LoadSpecDir(filepath.Join(t.TempDir(), "nope"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("empty directory", func(t *testing.T) {
		specs, err := providers.LoadSpecDir(t.TempDir())
		require.NoError(t, err)
		require.Empty(t, specs)
	})
}

func TestBuiltinSpecsMatchShippedFiles(t *testing.T) {
	specs, err := providers.BuiltinSpecs()
	require.NoError(t, err)
	var names []string
	for _, s := range specs {
		names = append(names, s.Name())
	}
	require.Equal(t, []string{"acme-registers", "generic-json"}, names)
	// The embedded files are the ones in specs/, so LoadSpecDir reads the
	// same providers from the source tree.
	fromDir, err := providers.LoadSpecDir("specs")
	require.NoError(t, err)
	require.Len(t, fromDir, len(specs))
}

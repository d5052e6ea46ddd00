package strictyaml_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/internal/strictyaml"
)

type inner struct {
	Port int `yaml:"port"`
}

type doc struct {
	Name   string         `yaml:"name"`
	Inner  inner          `yaml:"inner"`
	Opt    *inner         `yaml:"opt"`
	List   []string       `yaml:"list"`
	Items  []inner        `yaml:"items"`
	Limits map[string]int `yaml:"limits"`
	Pairs  []string       `yaml:"pairs"`
}

func decode(t *testing.T, src string, d *doc, opts strictyaml.Options) []string {
	t.Helper()
	var n yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(src), &n))
	var got []string
	strictyaml.Decode(n.Content[0], reflect.ValueOf(d).Elem(), "", opts, func(key, format string, args ...any) {
		got = append(got, key+": "+fmt.Sprintf(format, args...))
	})
	return got
}

func TestDecodeReportsEveryProblemWithItsPath(t *testing.T) {
	d := doc{Name: "default", Inner: inner{Port: 1}}
	got := decode(t, `
name: [a, b]
inner: {port: many, prot: 2}
opt: {port: 3}
list: {a: b}
items: [{port: 1}, {port: x}]
limits: {a: 1}
nmae: x
name: again
`, &d, strictyaml.Options{})
	require.Equal(t, []string{
		"name: must be a single value (line 2)",
		"inner.port: cannot unmarshal !!str `many` into int (line 3)",
		`inner.prot: unknown key (line 3); did you mean "port"?`,
		"list: must be a list (line 5)",
		"items[1].port: cannot unmarshal !!str `x` into int (line 6)",
		`nmae: unknown key (line 8); did you mean "name"?`,
		"name: is given twice (line 9)",
	}, got)
	require.Equal(t, "default", d.Name, "a value that fails keeps what it held")
	require.Equal(t, 1, d.Inner.Port)
	require.Equal(t, &inner{Port: 3}, d.Opt)
	require.Equal(t, map[string]int{"a": 1}, d.Limits)
}

func TestMergeMapsAndHooks(t *testing.T) {
	d := doc{Limits: map[string]int{"a": 1, "b": 2}}
	var hooked []string
	opts := strictyaml.Options{MergeMaps: true, Hooks: map[reflect.Type]strictyaml.Hook{
		reflect.TypeFor[[]string](): func(n *yaml.Node, v reflect.Value, path string, report strictyaml.Report) {
			hooked = append(hooked, path)
		},
	}}
	require.Empty(t, decode(t, "limits: {b: 20, c: 3}\npairs: [x]\n", &d, opts))
	require.Equal(t, map[string]int{"a": 1, "b": 20, "c": 3}, d.Limits, "entries given override, the others stay")
	require.Equal(t, []string{"pairs"}, hooked)
}

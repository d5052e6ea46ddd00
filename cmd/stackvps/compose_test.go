package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/config"
)

// composeFile is the repository's docker-compose.yml, from this package.
const composeFile = "../../docker-compose.yml"

// stackvpsHTTPPort is where every stackvps process serves /metrics.
const stackvpsHTTPPort = 8000

// composeRequiredEnv are the variables docker-compose.yml requires from the
// environment (${VAR:?}), with a value of the right form for the tests.
var composeRequiredEnv = []string{
	// 32 zero bytes, base64: a well-formed key, never a real one.
	"STACKVPS_COMPLIANCE_CREDENTIALS_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
}

// loadCompose loads a compose file the way `docker compose` does, with the
// compose specification's own loader (compose-go): schema validation,
// interpolation, normalization, the consistency checks, relative paths
// resolved against the file's directory and every profile enabled, so that
// profile-gated services are checked too. Interpolation sees only environ
// ("KEY=value"), not the test's environment, so ${VAR:-default} checks the
// defaults and a required ${VAR:?} not in environ fails. No Docker engine or
// image is needed.
func loadCompose(t *testing.T, path string, environ ...string) *types.Project {
	t.Helper()
	p, err := loadComposeErr(t, path, environ...)
	require.NoError(t, err, "%s is not a valid compose file", path)
	return p
}

// loadRepoCompose loads the repository's docker-compose.yml with the
// variables it requires set, and extra ones.
func loadRepoCompose(t *testing.T, extra ...string) *types.Project {
	t.Helper()
	return loadCompose(t, composeFile, append(slices.Clone(composeRequiredEnv), extra...)...)
}

func loadComposeErr(t *testing.T, path string, environ ...string) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(path)
	require.NoError(t, err)
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithEnv(environ),
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithProfiles([]string{"*"}),
	)
	require.NoError(t, err)
	return opts.LoadProject(t.Context())
}

// stackvpsServices returns, sorted, the services built from the Dockerfile:
// the ones that run the stackvps binary.
func stackvpsServices(p *types.Project) []string {
	var names []string
	for name, s := range p.Services {
		if s.Build != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// stackvpsServiceProblems returns what the stackvps binary would reject in
// the stackvps services of p, one line per problem, each naming its service:
// a command line that checkArgs refuses (unknown command, flag or stage) and
// an environment that config.Load refuses (unknown STACKVPS_ variable, bad
// value), with the configuration file STACKVPS_CONFIG names when it is set:
// that file must be mounted (a bind mount, or a compose config or secret,
// whose inline content is written under dir to be read). A variable given
// without a value (passed through from the host) is not checked.
func stackvpsServiceProblems(p *types.Project, dir string) []string {
	names := stackvpsServices(p)
	if len(names) == 0 {
		return []string{"no service is built from the Dockerfile (none has build:)"}
	}
	var probs []string
	for _, name := range names {
		s := p.Services[name]
		args := []string(s.Command)
		switch {
		case len(s.Entrypoint) == 0:
		case s.Entrypoint[0] == "/stackvps":
			args = append(slices.Clone([]string(s.Entrypoint[1:])), args...)
		default:
			probs = append(probs, fmt.Sprintf("service %q: entrypoint %q does not run /stackvps", name, []string(s.Entrypoint)))
			continue
		}
		if err := checkArgs(args); err != nil {
			probs = append(probs, fmt.Sprintf("service %q: command %q is rejected by stackvps: %v", name, args, err))
		}
		cfgFile := ""
		if v := s.Environment["STACKVPS_CONFIG"]; v != nil && *v != "" {
			f, err := mountedFile(p, s, *v, filepath.Join(dir, name+".yaml"))
			if err != nil {
				probs = append(probs, fmt.Sprintf("service %q: STACKVPS_CONFIG: %v", name, err))
				continue
			}
			cfgFile = f
		}
		if _, err := config.Load(cfgFile, serviceEnviron(s)); err != nil {
			probs = append(probs, fmt.Sprintf("service %q: environment is rejected by config.Load: %s",
				name, strings.ReplaceAll(err.Error(), "\n", "; ")))
		}
	}
	return probs
}

// mountedFile returns the host file holding what service s sees at
// containerPath: a bind-mounted file, or a compose config or secret (inline
// content is written to scratch and that path returned).
func mountedFile(p *types.Project, s types.ServiceConfig, containerPath, scratch string) (string, error) {
	refs := map[string]types.FileObjectConfig{}
	for _, c := range s.Configs {
		target := c.Target
		if target == "" {
			target = "/" + c.Source
		}
		refs[target] = types.FileObjectConfig(p.Configs[c.Source])
	}
	for _, c := range s.Secrets {
		target := c.Target
		if target == "" {
			target = "/run/secrets/" + c.Source
		} else if !filepath.IsAbs(target) {
			target = "/run/secrets/" + target
		}
		refs[target] = types.FileObjectConfig(p.Secrets[c.Source])
	}
	if obj, ok := refs[containerPath]; ok {
		switch {
		case obj.File != "":
			return obj.File, nil
		case obj.Content != "":
			if err := os.WriteFile(scratch, []byte(obj.Content), 0o600); err != nil {
				return "", err
			}
			return scratch, nil
		default:
			return "", fmt.Errorf("%s is mounted from %q, which has neither file nor content", containerPath, obj.Name)
		}
	}
	if host, ok := hostPath(s, containerPath); ok {
		return host, nil
	}
	return "", fmt.Errorf("nothing is mounted at %s", containerPath)
}

// serviceEnviron returns a service's environment as sorted "KEY=value"
// strings, leaving out variables without a value.
func serviceEnviron(s types.ServiceConfig) []string {
	var env []string
	for k, v := range s.Environment {
		if v != nil {
			env = append(env, k+"="+*v)
		}
	}
	sort.Strings(env)
	return env
}

// hasService reports whether p defines a service of that name, whatever its
// profiles.
func hasService(p *types.Project, name string) bool {
	_, ok := p.AllServices()[name]
	return ok
}

// hostPath maps a path inside a service's container to the host file or
// directory bind-mounted there.
func hostPath(s types.ServiceConfig, containerPath string) (string, bool) {
	best, host := -1, ""
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind || len(v.Target) <= best {
			continue
		}
		if rel, ok := strings.CutPrefix(containerPath, v.Target); ok && (rel == "" || strings.HasPrefix(rel, "/")) {
			best, host = len(v.Target), filepath.Join(v.Source, filepath.FromSlash(rel))
		}
	}
	return host, best >= 0
}

func TestComposeServicesRunStackvps(t *testing.T) {
	p := loadRepoCompose(t)
	require.Contains(t, stackvpsServices(p), "bridge")
	probs := stackvpsServiceProblems(p, t.TempDir())
	require.Empty(t, probs, "docker-compose.yml:\n%s", strings.Join(probs, "\n"))
}

// The credentials key comes from the environment only: without it compose
// refuses the file rather than start with a key written in it.
func TestComposeRequiresCredentialsKey(t *testing.T) {
	_, err := loadComposeErr(t, composeFile)
	require.Error(t, err)
	require.Contains(t, err.Error(), "STACKVPS_COMPLIANCE_CREDENTIALS_KEY")
	data, err := os.ReadFile(composeFile)
	require.NoError(t, err)
	require.NotContains(t, string(data), strings.TrimPrefix(composeRequiredEnv[0], "STACKVPS_COMPLIANCE_CREDENTIALS_KEY="))
}

// With DEMO_REGULATOR set every stackvps service reads the demo
// configuration, which points each built-in compliance source at the
// regulator service; without it none reads a file (the real regulators).
func TestComposeDemoRegulator(t *testing.T) {
	p := loadRepoCompose(t)
	for _, name := range stackvpsServices(p) {
		if v := p.AllServices()[name].Environment["STACKVPS_CONFIG"]; v != nil {
			require.Empty(t, *v, "service %q: STACKVPS_CONFIG without DEMO_REGULATOR", name)
		}
	}

	p = loadRepoCompose(t, "DEMO_REGULATOR=1")
	reg, ok := p.AllServices()["regulator"]
	require.True(t, ok, "no regulator service")
	require.Contains(t, reg.Profiles, "demo", "the regulator runs only in the demo profile")
	require.Equal(t, "regulator", []string(reg.Command)[0])
	dir := t.TempDir()
	probs := stackvpsServiceProblems(p, dir)
	require.Empty(t, probs, "docker-compose.yml with DEMO_REGULATOR:\n%s", strings.Join(probs, "\n"))
	for _, name := range []string{"migrate", "compliance", "alerts", "api"} {
		s := p.AllServices()[name]
		v := s.Environment["STACKVPS_CONFIG"]
		require.True(t, v != nil && *v != "", "service %q: no STACKVPS_CONFIG with DEMO_REGULATOR", name)
		f, err := mountedFile(p, s, *v, filepath.Join(dir, "check.yaml"))
		require.NoError(t, err, "service %q", name)
		cfg, err := config.Load(f, serviceEnviron(s))
		require.NoError(t, err, "service %q", name)
		for _, code := range config.ComplianceBuiltinSources {
			require.True(t, strings.HasPrefix(cfg.Compliance.Sources[code].Endpoint, "http://regulator:9100/"),
				"service %q: source %s goes to %q, not the regulator", name, code, cfg.Compliance.Sources[code].Endpoint)
		}
	}
}

func TestComposeCheckReportsProblems(t *testing.T) {
	tests := []struct {
		name    string
		compose string
		// want holds, per problem expected, substrings of its line.
		want [][]string
	}{
		{
			name: "valid",
			compose: `
services:
  bridge:
    build: .
    command: ["run", "--stages", "bridge"]
    environment:
      KAFKA_BROKERS: redpanda:9092
      STACKVPS_LOG_FORMAT: json
  broker:
    image: eclipse-mosquitto:2.0.22
    command: ["anything", "--goes"]
`,
		},
		{
			name: "unknown stage and unknown variable",
			compose: `
services:
  badstage:
    build: .
    command: ["run", "--stages", "nope"]
  badenv:
    build: .
    command: ["run", "--stages", "bridge"]
    environment:
      - STACKVPS_KAFKA_BROKERZ=x
`,
			want: [][]string{
				{`service "badenv"`, "STACKVPS_KAFKA_BROKERZ"},
				{`service "badstage"`, "nope"},
			},
		},
		{
			name: "bad value of a contract variable",
			compose: `
services:
  bridge:
    build: .
    command: ["run", "--stages", "bridge"]
    environment:
      MQTT_PORT: not-a-port
`,
			want: [][]string{{`service "bridge"`, "mqtt.port"}},
		},
		{
			name: "unknown command",
			compose: `
services:
  worker:
    build: .
    command: frobnicate --hard
`,
			want: [][]string{{`service "worker"`, "frobnicate"}},
		},
		{
			name: "no command",
			compose: `
services:
  worker:
    build: .
`,
			want: [][]string{{`service "worker"`, "no command"}},
		},
		{
			name: "profile-gated service is checked",
			compose: `
services:
  demo:
    build: .
    profiles: ["demo"]
    command: ["simulate", "--devicez", "5"]
`,
			want: [][]string{{`service "demo"`, "devicez"}},
		},
		{
			name: "no stackvps service",
			compose: `
services:
  broker:
    image: eclipse-mosquitto:2.0.22
`,
			want: [][]string{{"no service is built from the Dockerfile"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "compose.yml")
			require.NoError(t, os.WriteFile(path, []byte("name: composecheck\n"+tt.compose), 0o600))
			probs := stackvpsServiceProblems(loadCompose(t, path), dir)
			require.Len(t, probs, len(tt.want), "problems:\n%s", strings.Join(probs, "\n"))
			for i, want := range tt.want {
				for _, sub := range want {
					require.Contains(t, probs[i], sub)
				}
			}
		})
	}
}

func TestComposeMountedFilesExist(t *testing.T) {
	p := loadRepoCompose(t)
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	for _, name := range stackvpsServices(p) {
		b := p.Services[name].Build
		df := b.Dockerfile
		if df == "" {
			df = "Dockerfile"
		}
		if !filepath.IsAbs(df) {
			df = filepath.Join(b.Context, df)
		}
		require.FileExists(t, df, "service %q: its Dockerfile", name)
	}
	var mounts int
	for name, s := range p.AllServices() {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			mounts++
			rel, err := filepath.Rel(root, v.Source)
			require.NoError(t, err)
			require.False(t, rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)),
				"service %q mounts %s, outside the repository", name, v.Source)
			_, err = os.Stat(v.Source)
			require.NoError(t, err, "service %q mounts %s at %s", name, rel, v.Target)
		}
	}
	require.NotZero(t, mounts, "no bind mount found: the config files are not mounted")
	for name, c := range p.Configs {
		if c.File != "" {
			require.FileExists(t, c.File, "config %q", name)
		}
	}
	for name, s := range p.Secrets {
		if s.File != "" {
			require.FileExists(t, s.File, "secret %q", name)
		}
	}
}

// promConfig is the part of a Prometheus configuration the tests read.
type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

// promRules is a Prometheus rule file.
type promRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(data, v), "%s does not parse", path)
}

func TestComposePrometheus(t *testing.T) {
	p := loadRepoCompose(t)
	prom, ok := p.Services["prometheus"]
	require.True(t, ok, "no prometheus service")
	cfgPath := "/etc/prometheus/prometheus.yml"
	for _, arg := range prom.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			cfgPath = v
		}
	}
	host, ok := hostPath(prom, cfgPath)
	require.True(t, ok, "service \"prometheus\": nothing is mounted at %s", cfgPath)
	var cfg promConfig
	readYAML(t, host, &cfg)

	// Every target names a compose service, and every service running
	// `stackvps run` (which serves /metrics) is scraped on its HTTP port.
	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				h, port, err := net.SplitHostPort(target)
				require.NoError(t, err, "job %q: target %q", sc.JobName, target)
				if h == "localhost" {
					continue // Prometheus itself.
				}
				require.True(t, hasService(p, h), "job %q: target %q names no compose service", sc.JobName, target)
				if port == fmt.Sprint(stackvpsHTTPPort) {
					scraped[h] = true
				}
			}
		}
		for _, dns := range sc.DNSSDConfigs {
			require.Equal(t, "A", dns.Type, "job %q: dns_sd_configs must be type A for compose services", sc.JobName)
			for _, n := range dns.Names {
				require.True(t, hasService(p, n), "job %q: dns_sd_configs name %q is no compose service", sc.JobName, n)
				if dns.Port == stackvpsHTTPPort {
					scraped[n] = true
				}
			}
		}
	}
	for _, name := range stackvpsServices(p) {
		if cmd := p.AllServices()[name].Command; len(cmd) == 0 || cmd[0] != "run" {
			continue // migrate and simulate serve no metrics.
		}
		require.True(t, scraped[name], "service %q runs stages but is not scraped on :%d by %s", name, stackvpsHTTPPort, host)
	}

	// Rule files are mounted and hold well-formed rules.
	require.NotEmpty(t, cfg.RuleFiles)
	for _, rf := range cfg.RuleFiles {
		if !filepath.IsAbs(rf) {
			rf = filepath.Join(filepath.Dir(cfgPath), rf)
		}
		host, ok := hostPath(prom, rf)
		require.True(t, ok, "service \"prometheus\": rule file %s is not mounted", rf)
		var rules promRules
		readYAML(t, host, &rules)
		require.NotEmpty(t, rules.Groups, "%s has no rule group", host)
		for _, g := range rules.Groups {
			require.NotEmpty(t, g.Rules, "%s: group %q has no rule", host, g.Name)
			for _, r := range g.Rules {
				require.NotEmpty(t, r.Expr, "%s: rule %q has no expr", host, r.Alert+r.Record)
				if r.Alert != "" {
					require.NotEmpty(t, r.Labels["severity"], "%s: alert %q has no severity label", host, r.Alert)
					require.NotEmpty(t, r.Annotations["summary"], "%s: alert %q has no summary", host, r.Alert)
				}
			}
		}
	}
}

// grafanaDatasources is a Grafana data source provisioning file.
type grafanaDatasources struct {
	Datasources []struct {
		Name     string         `yaml:"name"`
		UID      string         `yaml:"uid"`
		Type     string         `yaml:"type"`
		URL      string         `yaml:"url"`
		JSONData map[string]any `yaml:"jsonData"`
	} `yaml:"datasources"`
}

// grafanaProviders is a Grafana dashboard provisioning file.
type grafanaProviders struct {
	Providers []struct {
		Name    string `yaml:"name"`
		Type    string `yaml:"type"`
		Options struct {
			Path string `yaml:"path"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// dashboardPanel is the part of a Grafana panel the tests read.
type dashboardPanel struct {
	ID         int              `json:"id"`
	Title      string           `json:"title"`
	Type       string           `json:"type"`
	Datasource *datasourceRef   `json:"datasource"`
	Targets    []dashboardQuery `json:"targets"`
	Panels     []dashboardPanel `json:"panels"`
}

type dashboardQuery struct {
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func TestComposeGrafana(t *testing.T) {
	p := loadRepoCompose(t)
	graf, ok := p.Services["grafana"]
	require.True(t, ok, "no grafana service")
	prov, ok := hostPath(graf, "/etc/grafana/provisioning")
	require.True(t, ok, "service \"grafana\": nothing is mounted at /etc/grafana/provisioning")

	uids := map[string]string{} // uid -> type
	dsFiles, err := filepath.Glob(filepath.Join(prov, "datasources", "*.y*ml"))
	require.NoError(t, err)
	require.NotEmpty(t, dsFiles, "no data source provisioning file in %s/datasources", prov)
	for _, f := range dsFiles {
		var ds grafanaDatasources
		readYAML(t, f, &ds)
		for _, d := range ds.Datasources {
			require.NotEmpty(t, d.UID, "%s: data source %q has no uid for dashboards to refer to", f, d.Name)
			uids[d.UID] = d.Type
			if d.Type == "grafana-postgresql-datasource" || d.Type == "postgres" {
				h, _, err := net.SplitHostPort(d.URL)
				require.NoError(t, err, "%s: data source %q: url", f, d.Name)
				require.True(t, hasService(p, h), "%s: data source %q points at %q, no compose service", f, d.Name, h)
				require.Equal(t, true, d.JSONData["timescaledb"], "%s: data source %q: jsonData.timescaledb", f, d.Name)
			}
		}
	}

	provFiles, err := filepath.Glob(filepath.Join(prov, "dashboards", "*.y*ml"))
	require.NoError(t, err)
	require.NotEmpty(t, provFiles, "no dashboard provider in %s/dashboards", prov)
	var dashboards []string
	for _, f := range provFiles {
		var pr grafanaProviders
		readYAML(t, f, &pr)
		for _, provider := range pr.Providers {
			dir, ok := hostPath(graf, provider.Options.Path)
			require.True(t, ok, "%s: provider %q: nothing is mounted at %s", f, provider.Name, provider.Options.Path)
			files, err := filepath.Glob(filepath.Join(dir, "*.json"))
			require.NoError(t, err)
			require.NotEmpty(t, files, "%s: provider %q: no dashboard in %s", f, provider.Name, dir)
			dashboards = append(dashboards, files...)
		}
	}

	for _, f := range dashboards {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var dash struct {
			UID        string           `json:"uid"`
			Panels     []dashboardPanel `json:"panels"`
			Templating struct {
				List []struct {
					Name       string         `json:"name"`
					Datasource *datasourceRef `json:"datasource"`
				} `json:"list"`
			} `json:"templating"`
		}
		require.NoError(t, json.Unmarshal(data, &dash), "%s does not parse", f)
		require.NotEmpty(t, dash.UID, "%s: dashboard has no uid", f)
		require.NotEmpty(t, dash.Panels, "%s: dashboard has no panel", f)
		checkRef := func(what string, ref *datasourceRef) {
			t.Helper()
			require.NotNil(t, ref, "%s: %s has no datasource", f, what)
			typ, ok := uids[ref.UID]
			require.True(t, ok, "%s: %s uses datasource uid %q, not provisioned", f, what, ref.UID)
			if ref.Type != "" {
				require.Equal(t, typ, ref.Type, "%s: %s: datasource %q type", f, what, ref.UID)
			}
		}
		var walk func(panels []dashboardPanel)
		walk = func(panels []dashboardPanel) {
			for _, pnl := range panels {
				walk(pnl.Panels) // Panels inside a collapsed row.
				if pnl.Type == "row" {
					continue
				}
				what := fmt.Sprintf("panel %d %q", pnl.ID, pnl.Title)
				require.NotEmpty(t, pnl.Targets, "%s: %s has no query", f, what)
				checkRef(what, pnl.Datasource)
				for _, q := range pnl.Targets {
					if q.Datasource != nil {
						checkRef(what+" query "+q.RefID, q.Datasource)
					}
				}
			}
		}
		walk(dash.Panels)
		for _, v := range dash.Templating.List {
			if v.Datasource != nil {
				checkRef("variable "+v.Name, v.Datasource)
			}
		}
	}
}

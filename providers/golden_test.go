package providers_test

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/providers"
)

var update = flag.Bool("update", false, "rewrite the want.json files of TestDecodeGolden")

// goldenReading is the want.json form of a providers.Reading.
type goldenReading struct {
	Device   string    `json:"device"`
	Time     time.Time `json:"time"`
	Variable string    `json:"variable"`
	Value    float64   `json:"value"`
	Unit     string    `json:"unit"`
	RawValue float64   `json:"raw_value"`
	RawUnit  string    `json:"raw_unit"`
}

// goldenMeta is meta.json: what the record around the payload says.
// Missing fields take defaultMeta's.
type goldenMeta struct {
	Device     *string `json:"device"`
	Topic      *string `json:"topic"`
	ReceivedAt *string `json:"received_at"`
}

const defaultReceivedAt = "2026-11-26T21:00:05Z"

// goldenCase is one testdata/<provider>/<case>/ directory.
type goldenCase struct {
	provider, name, dir string
	payload             providers.Payload
}

// newTestRegistry returns the built-in providers and every
// testdata/specs/*.good.yaml spec.
func newTestRegistry(tb testing.TB) *providers.Registry {
	tb.Helper()
	reg := providers.NewRegistry()
	require.NoError(tb, providers.RegisterBuiltin(reg))
	files, err := filepath.Glob("testdata/specs/*.good.yaml")
	require.NoError(tb, err)
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(tb, err)
		s, err := providers.ParseSpec(data)
		require.NoError(tb, err, f)
		require.NoError(tb, reg.Register(s.Name(), s))
	}
	return reg
}

// goldenCases returns the cases of provider, or of every provider when
// provider is empty.
func goldenCases(tb testing.TB, provider string) []goldenCase {
	tb.Helper()
	dirs, err := filepath.Glob("testdata/*/*")
	require.NoError(tb, err)
	var out []goldenCase
	for _, dir := range dirs {
		prov, name := filepath.Base(filepath.Dir(dir)), filepath.Base(dir)
		if prov == "specs" || prov == "fuzz" || (provider != "" && prov != provider) {
			continue
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		out = append(out, goldenCase{provider: prov, name: name, dir: dir, payload: readGoldenPayload(tb, prov, dir)})
	}
	return out
}

func readGoldenPayload(tb testing.TB, provider, dir string) providers.Payload {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "payload.json"))
	if errors.Is(err, os.ErrNotExist) {
		data, err = os.ReadFile(filepath.Join(dir, "payload.bin"))
	}
	require.NoError(tb, err, "%s needs payload.json or payload.bin", dir)
	device, receivedAt := "dev-test", defaultReceivedAt
	p := providers.Payload{Provider: provider, Bytes: data}
	var meta goldenMeta
	if raw, err := os.ReadFile(filepath.Join(dir, "meta.json")); err == nil {
		require.NoError(tb, json.Unmarshal(raw, &meta), dir)
	}
	if meta.Device != nil {
		device = *meta.Device
	}
	if meta.ReceivedAt != nil {
		receivedAt = *meta.ReceivedAt
	}
	p.Device, p.Topic = device, "telemetry/"+provider+"/"+device
	if meta.Topic != nil {
		p.Topic = *meta.Topic
	}
	if receivedAt != "" {
		p.ReceivedAt, err = time.Parse(time.RFC3339Nano, receivedAt)
		require.NoError(tb, err, dir)
	}
	return p
}

// TestDecodeGolden decodes every testdata/<provider>/<case>/payload.* and
// compares with want.json (the readings) or want.err (a substring of the
// error). To rewrite the want.json files:
//
//	go test ./providers -run Golden -update
func TestDecodeGolden(t *testing.T) {
	reg := newTestRegistry(t)
	cases := goldenCases(t, "")
	perProvider := map[string]int{}
	for _, c := range cases {
		perProvider[c.provider]++
		t.Run(c.provider+"/"+c.name, func(t *testing.T) {
			dec, err := reg.Lookup(c.provider)
			require.NoError(t, err, "testdata/%s is not a registered provider", c.provider)
			got, err := dec.Decode(t.Context(), c.payload)

			wantErr, rerr := os.ReadFile(filepath.Join(c.dir, "want.err"))
			if rerr == nil {
				require.Error(t, err, "want an error containing %q; got readings %+v", wantErr, got)
				require.ErrorIs(t, err, providers.ErrBadPayload)
				require.Contains(t, err.Error(), strings.TrimSpace(string(wantErr)))
				require.Nil(t, got, "readings returned with an error")
				return
			}
			require.NoError(t, err)
			gotGolden := make([]goldenReading, len(got))
			for i, r := range got {
				gotGolden[i] = goldenReading(r)
			}
			wantFile := filepath.Join(c.dir, "want.json")
			if *update {
				data, err := json.MarshalIndent(gotGolden, "", "  ")
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(wantFile, append(data, '\n'), 0o644))
			}
			data, err := os.ReadFile(wantFile)
			require.NoError(t, err, "no want.json nor want.err; run with -update to create want.json")
			var want []goldenReading
			require.NoError(t, json.Unmarshal(data, &want))
			for i := range want {
				want[i].Time = want[i].Time.UTC()
			}
			require.Equal(t, want, gotGolden)
		})
	}
	builtin := providers.NewRegistry()
	require.NoError(t, providers.RegisterBuiltin(builtin))
	for _, name := range builtin.Names() {
		require.GreaterOrEqual(t, perProvider[name], 6, "provider %s needs at least 6 golden cases", name)
	}
}

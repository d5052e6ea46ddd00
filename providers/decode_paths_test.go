package providers

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	_ AppendDecoder = (*Spec)(nil)
	_ AppendDecoder = LoRaWAN{}
)

// slowPaths returns a copy of ps that reads every path with gjson.Get.
func slowPaths(ps *pathSet) *pathSet {
	return &pathSet{paths: ps.paths}
}

// slowSpec returns a copy of s that reads every path with gjson.Get: what
// the spec decoder did before it read a payload in one pass.
func slowSpec(s *Spec) *Spec {
	c := *s
	c.paths = slowPaths(s.paths)
	if s.regs != nil {
		rs := *s.regs
		rs.elem = slowPaths(s.regs.elem)
		c.regs = &rs
	}
	return &c
}

// decodePathsCases are the specs (built-in and testdata/specs/*.good.yaml)
// with their golden payloads as seeds.
func decodePathsCases(tb testing.TB) (map[string]Decoder, [][]byte) {
	tb.Helper()
	specs, err := BuiltinSpecs()
	require.NoError(tb, err)
	files, err := filepath.Glob("testdata/specs/*.good.yaml")
	require.NoError(tb, err)
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(tb, err)
		s, err := ParseSpec(data)
		require.NoError(tb, err, f)
		specs = append(specs, s)
	}
	decs := map[string]Decoder{}
	for _, s := range specs {
		decs[s.Name()] = s
	}
	payloads, err := filepath.Glob("testdata/*/*/payload.json")
	require.NoError(tb, err)
	var seeds [][]byte
	for _, f := range payloads {
		data, err := os.ReadFile(f)
		require.NoError(tb, err)
		seeds = append(seeds, data)
	}
	return decs, seeds
}

// requireSameDecoding decodes payload with every spec and the LoRaWAN
// decoder, reading paths in one pass and with gjson.Get, and requires the
// same readings or the same error.
func requireSameDecoding(t *testing.T, specs map[string]Decoder, payload []byte) {
	t.Helper()
	p := Payload{Device: "topic-dev", Topic: "telemetry/x/topic-dev", Bytes: payload,
		ReceivedAt: time.Date(2026, 11, 26, 21, 0, 1, 0, time.UTC)}
	check := func(name string, fast, slow func() ([]Reading, error)) {
		got, err := fast()
		want, wantErr := slow()
		if wantErr != nil {
			require.EqualError(t, err, wantErr.Error(), "%s: %s", name, payload)
			return
		}
		require.NoError(t, err, "%s: %s", name, payload)
		require.Equal(t, want, got, "%s: %s", name, payload)
	}
	// AppendDecode appends what Decode returns.
	prefix := []Reading{{Device: "before", Variable: "flow"}}
	for name, d := range specs {
		check(name+" AppendDecode", func() ([]Reading, error) {
			out, err := d.(AppendDecoder).AppendDecode(t.Context(), append(make([]Reading, 0, 8), prefix...), p)
			if err != nil {
				require.Nil(t, out)
				return nil, err
			}
			require.Equal(t, prefix, out[:1])
			return out[1:], nil
		}, func() ([]Reading, error) { return d.Decode(t.Context(), p) })
	}
	for name, d := range specs {
		s := d.(*Spec)
		check(name, func() ([]Reading, error) { return s.Decode(t.Context(), p) },
			func() ([]Reading, error) { return slowSpec(s).Decode(t.Context(), p) })
	}
	check(LoRaWANProvider, func() ([]Reading, error) { return LoRaWAN{}.Decode(t.Context(), p) },
		func() ([]Reading, error) {
			return decodeLoRaWAN(nil, p, slowPaths(lorawanPaths), slowPaths(lorawanUplinkPaths))
		})
}

func TestOnePassDecodingMatchesGet(t *testing.T) {
	specs, seeds := decodePathsCases(t)
	for _, payload := range append(seeds, []byte(`{"device_id":"a","device_id":"b","ts":"2026-11-26T21:00:00Z","flow_lps":1,"flow_lps":"x"}`),
		[]byte(`{"device":{"serial":1},"device":{"serial":"s"},"time":1764190800123,"registers":[{"id":"Q","id":"VOL","value":1,"unit":"L","unit":"m3"}]}`),
		// Registers and uplink messages given twice, or read by gjson.Get.
		[]byte(`{"device":{"serial":"s"},"time":1,"registers":[{"id":"Q","value":1,"unit":"L/s"}],"registers":[{"id":"Q","value":2,"unit":"L/s"}]}`),
		[]byte(`{"device":{"serial":"s"},"time":1,"registers":{"id":"Q"},"registers":[{"id":"Q","value":2,"unit":"L/s"}]}`),
		[]byte(`{"device":[{"serial":"s"}],"time":1,"registers":[{"id":"Q","value":2,"unit":"L/s"}]}`),
		[]byte(`{"device":{"serial":"s"},"time":1,"registers":[{"id":"Q","value":2,"unit":"L/s"},1,{"id":"NIV","value":{"a":[1]},"unit":"cm"},{"id":"VOL","value":3,"unit":" L "},{},{},{},{},{}]}`),
		[]byte(`{"device":{"serial":"s"},"time":1,"registers":[{"id":"Q","value":2,"unit":"L/s","unit":"x"},{"id":"VOL","value":2,"id":"VOL","unit":"L"}]}`),
		[]byte(`{"end_device_ids":{"device_id":"d"},"uplink_message":{"f_port":1},"uplink_message":{"f_port":2,"frm_payload":"AWknalAAewAAMNQAEtaHA9kA"}}`),
		[]byte(`{"end_device_ids":{"device_id":"d"},"uplink_message":{"f_port":2},"uplink_message":{"f_port":2,"frm_payload":"AWknalAAewAAMNQAEtaHA9kA"}}`),
		[]byte(`{"end_device_ids":{"device_id":"d"},"uplink_message":{"f_port":2,"frm_payload":"AWknalAAewAAMNQAEtaHA9kA"},"uplink_message":[1]}`),
		[]byte(`{"end_device_ids":{"device_id":"d"},"uplink_message":[{"f_port":2}],"uplink_message":{"f_port":2,"frm_payload":"AWknalAAewAAMNQAEtaHA9kA"}}`),
		[]byte(`{"end_device_ids":[{"device_id":"d"}],"uplink_message":{"f_port":2,"frm_payload":"AWknalAAewAAMNQAEtaHA9kA"}}`),
		[]byte(`{"end_device_ids":{"device_id":"d"},"uplink_message":{"f_port":2,"f_port":1,"frm_payload":"AWknalAAewAAMNQAEtaHA9kA"},"end_device_ids":[1]}`),
		[]byte(`{"end_device_ids":{"device_id":"d"},"uplink_message":{"f_port":2,"frm_p\u0061yload":"AWknalAAewAAMNQAEtaHA9kA"}}`)) {
		requireSameDecoding(t, specs, payload)
	}
}

// FuzzOnePassDecoding compares every decoder reading its paths in one pass
// with the same decoder reading them with gjson.Get.
//
//	go test ./providers -run '^$' -fuzz FuzzOnePassDecoding -fuzztime 20s
func FuzzOnePassDecoding(f *testing.F) {
	specs, seeds := decodePathsCases(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		requireSameDecoding(t, specs, payload)
	})
}

package providers_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stackvps/stackvps/providers"
)

// Each fuzz target decodes arbitrary bytes with one provider, seeded from
// its golden payloads. A decoder must not panic, must return either
// readings or an error wrapping ErrBadPayload, and its readings must be
// usable: at least one, each with a device, a time, a known variable in
// its canonical unit and finite values. Run one for a while with
//
//	go test -run x -fuzz FuzzDecodeLoRaWAN -fuzztime 20s ./providers

func FuzzDecodeGenericJSON(f *testing.F)   { fuzzProvider(f, "generic-json") }
func FuzzDecodeAcmeRegisters(f *testing.F) { fuzzProvider(f, "acme-registers") }
func FuzzDecodeDGAStrings(f *testing.F)    { fuzzProvider(f, "dga-strings") }
func FuzzDecodeLoRaWAN(f *testing.F)       { fuzzProvider(f, "lorawan-ttn") }

func fuzzProvider(f *testing.F, provider string) {
	reg := newTestRegistry(f)
	dec, err := reg.Lookup(provider)
	if err != nil {
		f.Fatal(err)
	}
	cases := goldenCases(f, provider)
	if len(cases) == 0 {
		f.Fatalf("no golden cases for %s", provider)
	}
	for _, c := range cases {
		f.Add(c.payload.Bytes)
	}
	meta := cases[0].payload // device, topic, reception time
	f.Fuzz(func(t *testing.T, payload []byte) {
		p := meta
		p.Bytes = payload
		got, err := dec.Decode(t.Context(), p)
		checkDecoded(t, got, err)
	})
}

// FuzzDecodeLoRaWANFrame fuzzes the binary frame and the port inside a
// well-formed uplink, which mutating the JSON text rarely reaches.
func FuzzDecodeLoRaWANFrame(f *testing.F) {
	for _, c := range goldenCases(f, "lorawan-ttn") {
		var up struct {
			Uplink struct {
				FPort      int    `json:"f_port"`
				FRMPayload string `json:"frm_payload"`
			} `json:"uplink_message"`
		}
		if json.Unmarshal(c.payload.Bytes, &up) != nil {
			continue
		}
		frame, err := base64.StdEncoding.DecodeString(up.Uplink.FRMPayload)
		if err != nil {
			continue
		}
		f.Add(frame, up.Uplink.FPort)
	}
	f.Fuzz(func(t *testing.T, frame []byte, port int) {
		up := map[string]any{
			"end_device_ids": map[string]any{"device_id": "lw-1"},
			"uplink_message": map[string]any{"f_port": port, "frm_payload": base64.StdEncoding.EncodeToString(frame)},
		}
		payload, err := json.Marshal(up)
		if err != nil {
			t.Fatal(err)
		}
		got, err := providers.LoRaWAN{}.Decode(t.Context(), providers.Payload{Bytes: payload})
		checkDecoded(t, got, err)
		if err == nil && (port != 2 || len(frame) != 18 || frame[0] != 1) {
			t.Fatalf("accepted port %d, %d-byte frame version %d", port, len(frame), frame[0])
		}
	})
}

// FuzzParseSpec parses arbitrary YAML as a spec: no panic, and a spec
// that parses has a name.
func FuzzParseSpec(f *testing.F) {
	files, _ := filepath.Glob("testdata/specs/*.yaml")
	more, _ := filepath.Glob("specs/*.yaml")
	for _, file := range append(files, more...) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := providers.ParseSpec(data)
		if err == nil && s.Name() == "" {
			t.Fatal("parsed a spec without a name")
		}
	})
}

var (
	minTime = time.Unix(0, 0)
	maxTime = time.Unix(0, math.MaxInt64)
)

func checkDecoded(t *testing.T, got []providers.Reading, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, providers.ErrBadPayload) {
			t.Fatalf("error does not wrap ErrBadPayload: %v", err)
		}
		if got != nil {
			t.Fatalf("readings returned with an error: %+v", got)
		}
		return
	}
	if len(got) == 0 {
		t.Fatal("no error and no readings")
	}
	for _, r := range got {
		unit, ok := providers.CanonicalUnit(r.Variable)
		switch {
		case !ok:
			t.Fatalf("unknown variable %q", r.Variable)
		case r.Unit != unit:
			t.Fatalf("%s in %q, want %q", r.Variable, r.Unit, unit)
		case math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || math.IsNaN(r.RawValue) || math.IsInf(r.RawValue, 0):
			t.Fatalf("non-finite value: %+v", r)
		case r.Device == "":
			t.Fatalf("no device: %+v", r)
		case r.Time.Before(minTime) || r.Time.After(maxTime):
			t.Fatalf("time out of range: %+v", r)
		case r.Time.Location() != time.UTC:
			t.Fatalf("time not in UTC: %+v", r)
		}
	}
}

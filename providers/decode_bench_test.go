package providers_test

import (
	"path"
	"testing"
	"time"

	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/simulate"
)

// BenchmarkDecode decodes one simulated payload per provider.
//
//	go test -run x -bench BenchmarkDecode -count 6 -benchmem ./providers > new.txt && benchstat old.txt new.txt
func BenchmarkDecode(b *testing.B) {
	reg := providers.NewRegistry()
	if err := providers.RegisterBuiltin(reg); err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 11, 26, 21, 0, 0, 123_000_000, time.UTC)
	for _, name := range []string{"generic-json", "acme-registers", "lorawan-ttn"} {
		b.Run("provider="+name, func(b *testing.B) {
			fleet, err := simulate.New(simulate.Config{Devices: 1, Formats: []string{name}, Rate: 1})
			if err != nil {
				b.Fatal(err)
			}
			msg, err := fleet.MessageAt(0, 0, start)
			if err != nil {
				b.Fatal(err)
			}
			dec, err := reg.Lookup(name)
			if err != nil {
				b.Fatal(err)
			}
			p := providers.Payload{Provider: name, Device: path.Base(msg.Topic), Topic: msg.Topic, Bytes: msg.Payload, ReceivedAt: start}
			b.SetBytes(int64(len(msg.Payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(b.Context(), p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package providers_test

import (
	"path"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/simulate"
)

// TestDecodeSimulated decodes what simulate publishes, for every shipped
// format, and gets back exactly the simulated canonical values: 50
// readings from 5 devices, 10 minutes apart.
func TestDecodeSimulated(t *testing.T) {
	reg := providers.NewRegistry()
	require.NoError(t, providers.RegisterBuiltin(reg))
	start := time.Date(2026, 11, 26, 21, 0, 0, 123_000_000, time.UTC)
	const devices, perDevice = 5, 10
	for name := range simulate.Formats() {
		t.Run(name, func(t *testing.T) {
			fleet, err := simulate.New(simulate.Config{Devices: devices, Formats: []string{name}, Rate: 1.0 / 600})
			require.NoError(t, err)
			dec, err := reg.Lookup(name)
			require.NoError(t, err)
			for i := range devices {
				for n := range perDevice {
					msg, err := fleet.MessageAt(i, n, start)
					require.NoError(t, err)
					want := fleet.ReadingAt(i, n, start)
					got, err := dec.Decode(t.Context(), providers.Payload{
						Provider:   name,
						Device:     path.Base(msg.Topic),
						Topic:      msg.Topic,
						Bytes:      msg.Payload,
						ReceivedAt: want.Time.Add(850 * time.Millisecond),
					})
					require.NoError(t, err, "%s", msg.Payload)
					require.Len(t, got, 3)
					byVar := map[string]providers.Reading{}
					for _, r := range got {
						require.Equal(t, want.Device, r.Device)
						require.True(t, want.Time.Equal(r.Time), "time %s, want %s", r.Time, want.Time)
						unit, ok := providers.CanonicalUnit(r.Variable)
						require.True(t, ok)
						require.Equal(t, unit, r.Unit)
						byVar[r.Variable] = r
					}
					if name == "acme-registers" {
						// Flow travels as m3/h = L/s × 3.6 in float64.
						require.InDelta(t, want.Flow, byVar["flow"].Value, 1e-9)
					} else {
						require.Equal(t, want.Flow, byVar["flow"].Value)
					}
					require.Equal(t, want.Totalizer, byVar["totalizer"].Value)
					require.Equal(t, want.Level, byVar["level"].Value)
				}
			}
		})
	}
}

// TestDecodeSimulatedBadPayloads checks that the malformed payloads a
// faulty simulated fleet sends are all rejected as bad payloads.
func TestDecodeSimulatedBadPayloads(t *testing.T) {
	reg := providers.NewRegistry()
	require.NoError(t, providers.RegisterBuiltin(reg))
	start := time.Date(2026, 11, 26, 21, 0, 0, 0, time.UTC)
	for name := range simulate.Formats() {
		t.Run(name, func(t *testing.T) {
			fleet, err := simulate.New(simulate.Config{Devices: 1, Formats: []string{name}, Rate: 1})
			require.NoError(t, err)
			msg, err := fleet.MessageAt(0, 0, start)
			require.NoError(t, err)
			dec, err := reg.Lookup(name)
			require.NoError(t, err)
			for _, bad := range [][]byte{msg.Payload[:len(msg.Payload)/2], []byte("\x00\x01garbage"), []byte("{}"), nil} {
				got, err := dec.Decode(t.Context(), providers.Payload{Provider: name, Device: "d", Bytes: bad, ReceivedAt: start})
				require.ErrorIs(t, err, providers.ErrBadPayload, "%q", bad)
				require.Nil(t, got)
			}
		})
	}
}

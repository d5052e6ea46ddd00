package simulate_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/simulate"
)

var t0 = time.Date(2026, 6, 11, 13, 0, 0, 0, time.UTC)

func TestFormatsCarryTheReading(t *testing.T) {
	r := simulate.Reading{Device: "dev-1", Time: t0.Add(1234 * time.Millisecond), Flow: 15.31, Totalizer: 1010.123, Level: 9.85}
	t.Run("generic-json", func(t *testing.T) {
		b, err := simulate.GenericJSON{}.Encode(r)
		require.NoError(t, err)
		var v struct {
			DeviceID    string  `json:"device_id"`
			TS          string  `json:"ts"`
			FlowLPS     float64 `json:"flow_lps"`
			TotalizerM3 float64 `json:"totalizer_m3"`
			LevelM      float64 `json:"level_m"`
		}
		require.NoError(t, json.Unmarshal(b, &v))
		ts, err := time.Parse(time.RFC3339, v.TS)
		require.NoError(t, err)
		require.Equal(t, r.Time, ts)
		require.Equal(t, []any{"dev-1", 15.31, 1010.123, 9.85}, []any{v.DeviceID, v.FlowLPS, v.TotalizerM3, v.LevelM})
	})
	t.Run("acme-registers", func(t *testing.T) {
		b, err := simulate.AcmeRegisters{}.Encode(r)
		require.NoError(t, err)
		var v struct {
			Device    struct{ Serial string } `json:"device"`
			Time      int64                   `json:"time"`
			Registers []struct {
				ID    string  `json:"id"`
				Value float64 `json:"value"`
				Unit  string  `json:"unit"`
			} `json:"registers"`
		}
		require.NoError(t, json.Unmarshal(b, &v))
		require.Equal(t, "dev-1", v.Device.Serial)
		require.Equal(t, r.Time, time.UnixMilli(v.Time).UTC())
		got := map[string]float64{}
		for _, reg := range v.Registers {
			got[reg.ID+" "+reg.Unit] = reg.Value
		}
		require.InDelta(t, r.Flow, got["Q m3/h"]/3.6, 1e-9)
		require.Equal(t, 1010123.0, got["VOL L"])
		require.Equal(t, 985.0, got["NIV cm"])
	})
	t.Run("lorawan-ttn", func(t *testing.T) {
		b, err := simulate.LoRaWAN{}.Encode(r)
		require.NoError(t, err)
		var v struct {
			IDs struct {
				DeviceID string `json:"device_id"`
			} `json:"end_device_ids"`
			Uplink struct {
				FPort      int    `json:"f_port"`
				FRMPayload string `json:"frm_payload"`
			} `json:"uplink_message"`
		}
		require.NoError(t, json.Unmarshal(b, &v))
		require.Equal(t, "dev-1", v.IDs.DeviceID)
		require.Equal(t, 2, v.Uplink.FPort)
		f, err := base64.StdEncoding.DecodeString(v.Uplink.FRMPayload)
		require.NoError(t, err)
		require.Len(t, f, simulate.FrameSize)
		require.Equal(t, byte(1), f[0])
		ts := time.Unix(int64(binary.BigEndian.Uint32(f[1:])), int64(binary.BigEndian.Uint16(f[5:]))*int64(time.Millisecond)).UTC()
		require.Equal(t, r.Time, ts)
		require.Equal(t, int32(15310), int32(binary.BigEndian.Uint32(f[7:])))
		require.Equal(t, uint32(1010123), binary.BigEndian.Uint32(f[11:]))
		require.Equal(t, uint16(985), binary.BigEndian.Uint16(f[15:]))
	})
}

func TestLoRaWANRejectsOutOfRange(t *testing.T) {
	_, err := simulate.LoRaWAN{}.EncodeFrame(simulate.Reading{Time: t0, Level: -1})
	require.Error(t, err)
}

func TestReadingsAreDeterministicAndPlausible(t *testing.T) {
	a, err := simulate.New(simulate.Config{Devices: 9, Rate: 1})
	require.NoError(t, err)
	b, err := simulate.New(simulate.Config{Devices: 9, Rate: 1})
	require.NoError(t, err)
	for i := range 9 {
		prev := a.ReadingAt(i, 0, t0)
		for n := 1; n < 50; n++ {
			ra, rb := a.ReadingAt(i, n, t0), b.ReadingAt(i, n, t0)
			require.Equal(t, ra, rb)
			require.Equal(t, t0.Add(time.Duration(n)*time.Second), ra.Time)
			require.GreaterOrEqual(t, ra.Totalizer, prev.Totalizer, "totalizers never run backwards")
			require.Positive(t, ra.Flow)
			require.Equal(t, ra.Flow, math.Round(ra.Flow*1000)/1000, "flow is on the 1 mL/s grid")
			prev = ra
		}
	}
	ids := a.Devices()
	require.Len(t, ids, 9)
	require.True(t, strings.HasPrefix(ids[0], "acme-"))
	require.True(t, strings.HasPrefix(ids[1], "gen-"))
	require.True(t, strings.HasPrefix(ids[2], "lw-"))
}

func TestSkewedDevices(t *testing.T) {
	f, err := simulate.New(simulate.Config{Devices: 10, Rate: 1, Faults: simulate.Faults{SkewedDevices: 0.2, Skew: 2 * time.Hour}})
	require.NoError(t, err)
	require.Equal(t, t0.Add(2*time.Hour), f.ReadingAt(0, 0, t0).Time)
	require.Equal(t, t0.Add(2*time.Hour), f.ReadingAt(1, 0, t0).Time)
	require.Equal(t, t0, f.ReadingAt(2, 0, t0).Time)
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  simulate.Config
		want string
	}{
		{"rate 0 needs count", simulate.Config{Rate: 0}, "needs a count"},
		{"negative rate", simulate.Config{Rate: -1}, "must not be negative"},
		{"bad format", simulate.Config{Rate: 1, Formats: []string{"nope"}}, `unknown format "nope"`},
		{"qos 2", simulate.Config{Rate: 1, QoS: 2}, "qos must be 0 or 1"},
		{"ratio", simulate.Config{Rate: 1, Faults: simulate.Faults{BadRatio: 2}}, "between 0 and 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := simulate.New(tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// recorder is a Publisher that keeps every message.
type recorder struct {
	mu   sync.Mutex
	msgs map[string][][]byte
	fail error
}

func (r *recorder) Publish(_ context.Context, topic string, payload []byte, _ byte) error {
	if r.fail != nil {
		return r.fail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msgs == nil {
		r.msgs = map[string][][]byte{}
	}
	r.msgs[topic] = append(r.msgs[topic], payload)
	return nil
}

func TestRunPublishesEveryReading(t *testing.T) {
	f, err := simulate.New(simulate.Config{Devices: 6, Rate: 0, Count: 20, Start: t0})
	require.NoError(t, err)
	var rec recorder
	stats, err := f.Run(context.Background(), &rec)
	require.NoError(t, err)
	require.EqualValues(t, 120, stats.Published)
	require.EqualValues(t, 0, stats.Failed)
	require.Equal(t, map[string]int64{"acme-registers": 40, "generic-json": 40, "lorawan-ttn": 40}, stats.ByProvider)
	for i, dev := range f.Devices() {
		m, err := f.MessageAt(i, 7, t0)
		require.NoError(t, err)
		require.Contains(t, m.Topic, dev)
		require.Contains(t, rec.msgs[m.Topic], m.Payload)
	}
}

func TestRunFaults(t *testing.T) {
	f, err := simulate.New(simulate.Config{Devices: 10, Rate: 0, Count: 100, Start: t0,
		Faults: simulate.Faults{BadRatio: 0.1, DuplicateRatio: 0.1}})
	require.NoError(t, err)
	var rec recorder
	stats, err := f.Run(context.Background(), &rec)
	require.NoError(t, err)
	require.InDelta(t, 100, stats.Bad, 40)
	require.InDelta(t, 100, stats.Duplicates, 40)
	require.EqualValues(t, 1000+stats.Duplicates, stats.Published)
	var bad int
	for _, ps := range rec.msgs {
		for _, p := range ps {
			if !json.Valid(p) || string(p) == "{}" {
				bad++
			}
		}
	}
	require.GreaterOrEqual(t, bad, int(stats.Bad), "every malformed message fails to decode")
}

func TestRunCountsFailures(t *testing.T) {
	f, err := simulate.New(simulate.Config{Devices: 2, Rate: 0, Count: 3})
	require.NoError(t, err)
	stats, err := f.Run(context.Background(), &recorder{fail: errors.New("broker gone")})
	require.ErrorContains(t, err, "broker gone")
	require.EqualValues(t, 6, stats.Failed)
}

func TestBurstHoldsReadings(t *testing.T) {
	f, err := simulate.New(simulate.Config{Devices: 2, Rate: 0, Count: 10, Start: t0, Faults: simulate.Faults{BurstEvery: 5 * time.Second}})
	require.NoError(t, err)
	var rec recorder
	stats, err := f.Run(context.Background(), &rec)
	require.NoError(t, err)
	require.EqualValues(t, 20, stats.Published)
}

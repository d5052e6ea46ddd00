package simulate

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Reading is one simulated measurement in canonical units, already rounded
// to what every format can carry exactly (flow to 1 mL/s, totalizer to 1 L,
// level to 1 cm, time to 1 ms), so a decoder's output can be compared with it.
type Reading struct {
	Device    string
	Time      time.Time
	Flow      float64 // L/s
	Totalizer float64 // m³
	Level     float64 // m, water table depth
}

// Format encodes readings as one vendor's payload.
type Format interface {
	// Provider names the format; it is the provider level of the MQTT topic.
	Provider() string
	Encode(r Reading) ([]byte, error)
}

// Formats returns the shipped formats by provider name.
func Formats() map[string]Format {
	return map[string]Format{
		GenericJSON{}.Provider():   GenericJSON{},
		AcmeRegisters{}.Provider(): AcmeRegisters{},
		LoRaWAN{}.Provider():       LoRaWAN{},
	}
}

// GenericJSON is a flat JSON object in canonical units:
//
//	{"device_id":"gen-00001","ts":"2026-11-26T21:00:00.000Z","flow_lps":12.5,"totalizer_m3":1234.567,"level_m":9.85}
type GenericJSON struct{}

// Provider returns "generic-json".
func (GenericJSON) Provider() string { return "generic-json" }

// Encode writes the flat object.
func (GenericJSON) Encode(r Reading) ([]byte, error) {
	return json.Marshal(struct {
		DeviceID    string  `json:"device_id"`
		TS          string  `json:"ts"`
		FlowLPS     float64 `json:"flow_lps"`
		TotalizerM3 float64 `json:"totalizer_m3"`
		LevelM      float64 `json:"level_m"`
	}{r.Device, r.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), r.Flow, r.Totalizer, r.Level})
}

// AcmeRegisters is a nested vendor JSON whose registers carry their own
// units, the way many flow-meter gateways report (flow in m³/h, volume in
// litres, level in centimetres, time in epoch milliseconds):
//
//	{"gateway":{"serial":"GW-01"},"device":{"serial":"acme-00002","model":"FM-300"},
//	 "time":1764190800123,"registers":[{"id":"Q","value":45,"unit":"m3/h"},
//	 {"id":"VOL","value":1234567,"unit":"L"},{"id":"NIV","value":985,"unit":"cm"}]}
type AcmeRegisters struct{}

// Provider returns "acme-registers".
func (AcmeRegisters) Provider() string { return "acme-registers" }

type acmeRegister struct {
	ID    string  `json:"id"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Encode writes the nested object.
func (AcmeRegisters) Encode(r Reading) ([]byte, error) {
	type serial struct {
		Serial string `json:"serial"`
		Model  string `json:"model,omitempty"`
	}
	return json.Marshal(struct {
		Gateway   serial         `json:"gateway"`
		Device    serial         `json:"device"`
		Time      int64          `json:"time"`
		Registers []acmeRegister `json:"registers"`
	}{
		Gateway: serial{Serial: "GW-01"},
		Device:  serial{Serial: r.Device, Model: "FM-300"},
		Time:    r.Time.UnixMilli(),
		Registers: []acmeRegister{
			{ID: "Q", Value: r.Flow * 3.6, Unit: "m3/h"},
			{ID: "VOL", Value: math.Round(r.Totalizer * 1000), Unit: "L"},
			{ID: "NIV", Value: math.Round(r.Level * 100), Unit: "cm"},
		},
	})
}

// LoRaWAN is a The Things Stack v3 uplink whose frm_payload is a base64
// binary frame on FPort 2, big-endian, 18 bytes:
//
//	0     version (1)
//	1-4   uint32 measurement time, Unix seconds
//	5-6   uint16 milliseconds
//	7-10  int32 flow, mL/s
//	11-14 uint32 totalizer, litres (rolls over at 2^32)
//	15-16 uint16 level, cm
//	17    flags (bit 0: battery low)
type LoRaWAN struct{}

// Provider returns "lorawan-ttn".
func (LoRaWAN) Provider() string { return "lorawan-ttn" }

// FrameSize is the length of a LoRaWAN frame.
const FrameSize = 18

// EncodeFrame returns the binary frame of r.
func (LoRaWAN) EncodeFrame(r Reading) ([]byte, error) {
	if r.Flow < math.MinInt32/1000 || r.Flow > math.MaxInt32/1000 || r.Level < 0 || r.Level*100 > math.MaxUint16 || r.Totalizer < 0 {
		return nil, fmt.Errorf("reading out of the frame's range: %+v", r)
	}
	f := make([]byte, FrameSize)
	f[0] = 1
	binary.BigEndian.PutUint32(f[1:], uint32(r.Time.Unix()))
	binary.BigEndian.PutUint16(f[5:], uint16(r.Time.Nanosecond()/int(time.Millisecond)))
	binary.BigEndian.PutUint32(f[7:], uint32(int32(math.Round(r.Flow*1000))))
	binary.BigEndian.PutUint32(f[11:], uint32(uint64(math.Round(r.Totalizer*1000))))
	binary.BigEndian.PutUint16(f[15:], uint16(math.Round(r.Level*100)))
	return f, nil
}

// Encode writes the uplink JSON around the frame.
func (l LoRaWAN) Encode(r Reading) ([]byte, error) {
	frame, err := l.EncodeFrame(r)
	if err != nil {
		return nil, err
	}
	type ids struct {
		DeviceID       string `json:"device_id"`
		DevEUI         string `json:"dev_eui"`
		ApplicationIDs struct {
			ApplicationID string `json:"application_id"`
		} `json:"application_ids"`
	}
	type rx struct {
		GatewayIDs struct {
			GatewayID string `json:"gateway_id"`
		} `json:"gateway_ids"`
		RSSI int     `json:"rssi"`
		SNR  float64 `json:"snr"`
	}
	var up struct {
		EndDeviceIDs ids    `json:"end_device_ids"`
		ReceivedAt   string `json:"received_at"`
		Uplink       struct {
			FPort      int    `json:"f_port"`
			FCnt       int64  `json:"f_cnt"`
			FRMPayload string `json:"frm_payload"`
			RxMetadata []rx   `json:"rx_metadata"`
		} `json:"uplink_message"`
	}
	up.EndDeviceIDs.DeviceID = r.Device
	up.EndDeviceIDs.DevEUI = fmt.Sprintf("70B3D57ED%07X", hash(r.Device)&0xFFFFFFF)
	up.EndDeviceIDs.ApplicationIDs.ApplicationID = "stackvps-wells"
	// The network server stamps reception a little after the measurement.
	up.ReceivedAt = r.Time.Add(850 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	up.Uplink.FPort = 2
	up.Uplink.FCnt = r.Time.Unix() % 65536
	up.Uplink.FRMPayload = base64.StdEncoding.EncodeToString(frame)
	g := rx{RSSI: -97, SNR: 7.5}
	g.GatewayIDs.GatewayID = "gw-valle-01"
	up.Uplink.RxMetadata = []rx{g}
	return json.Marshal(up)
}

func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

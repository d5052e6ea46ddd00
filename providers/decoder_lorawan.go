package providers

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"
)

// LoRaWAN decodes The Things Stack v3 uplinks ("lorawan-ttn") whose
// uplink_message.frm_payload is the 18-byte big-endian frame of the
// simulate package, on FPort 2:
//
//	0     version (1)
//	1-4   uint32 measurement time, Unix seconds
//	5-6   uint16 milliseconds (0-999)
//	7-10  int32 flow, mL/s
//	11-14 uint32 totalizer, litres (rolls over at 2^32)
//	15-16 uint16 level, cm
//	17    flags (bit 0: battery low; not decoded)
//
// The device id is end_device_ids.device_id and the time is the frame's,
// not the network server's received_at. It returns flow (L/s), totalizer
// (m3) and level (m). The zero value is ready to use and safe for
// concurrent use.
type LoRaWAN struct{}

// LoRaWANProvider is the name RegisterBuiltin gives the LoRaWAN decoder.
const LoRaWANProvider = "lorawan-ttn"

// The paths an uplink is read at, compiled once (read-only): the device id
// and the uplink message in the payload, then the port and the frame in
// the uplink message. lorawanPaths also reads the port and the frame, in
// the uplink message (within): when validLookupScanned scanned them,
// lorawanUplinkPaths need not walk the uplink message again.
var (
	lorawanPaths       = lorawanPathSet()
	lorawanUplinkPaths = newPathSet("f_port", "frm_payload")
)

func lorawanPathSet() *pathSet {
	ps := newPathSet("end_device_ids.device_id", "uplink_message", "uplink_message.f_port", "uplink_message.frm_payload")
	ps.within("uplink_message")
	return ps
}

const (
	lorawanFPort     = 2
	lorawanFrameSize = 18
	lorawanVersion   = 1
)

// Decode decodes one uplink. The payload is not JSON, has no device id, is
// not on FPort 2, carries no frm_payload, invalid base64, a frame that is
// not 18 bytes long, a version other than 1 or milliseconds above 999:
// each is an error wrapping ErrBadPayload that names the field. ctx is not
// consulted.
func (LoRaWAN) Decode(_ context.Context, p Payload) ([]Reading, error) {
	return decodeLoRaWAN(make([]Reading, 0, 3), p, lorawanPaths, lorawanUplinkPaths)
}

// AppendDecode is Decode appending to dst (see AppendDecoder).
func (LoRaWAN) AppendDecode(_ context.Context, dst []Reading, p Payload) ([]Reading, error) {
	return decodeLoRaWAN(dst, p, lorawanPaths, lorawanUplinkPaths)
}

// decodeLoRaWAN is AppendDecode with the path sets as parameters, for the
// test that holds them to gjson.Get.
func decodeLoRaWAN(dst []Reading, p Payload, paths, uplinkPaths *pathSet) ([]Reading, error) {
	js := unsafe.String(unsafe.SliceData(p.Bytes), len(p.Bytes))
	var top [4]jsonValue
	valid, scanned := paths.validLookupScanned(js, top[:paths.len()], nil)
	if !valid {
		return nil, badf("payload", "not valid JSON")
	}
	device, err := deviceOf(top[0], "end_device_ids.device_id")
	if err != nil {
		return nil, err
	}
	up := top[1]
	if !up.isObject() {
		return nil, badf("uplink_message", "missing or not an object")
	}
	var fields [2]jsonValue
	if scanned && paths.len() == len(top) {
		fields = [2]jsonValue(top[2:])
	} else {
		uplinkPaths.lookup(up.raw, fields[:])
	}
	port := fields[0]
	if port.typ != gjson.Number {
		return nil, badf("uplink_message.f_port", "missing or not a number")
	}
	if port.raw != "2" {
		return nil, badf("uplink_message.f_port", "is %s; want %d", snippet(port.raw), lorawanFPort)
	}
	b64 := fields[1]
	if b64.typ != gjson.String {
		return nil, badf("uplink_message.frm_payload", "missing or not a string")
	}
	enc := strings.TrimSpace(b64.str)
	if len(enc) > 64 {
		n := base64.StdEncoding.DecodedLen(len(enc)) - strings.Count(enc[len(enc)-2:], "=")
		return nil, badf("uplink_message.frm_payload", "frame is %d bytes; want %d", n, lorawanFrameSize)
	}
	var buf [48]byte // a 64-character payload decodes to at most 48 bytes
	n, err := base64.StdEncoding.Decode(buf[:], []byte(enc))
	if err != nil {
		return nil, badf("uplink_message.frm_payload", "invalid base64: %v", err)
	}
	if n != lorawanFrameSize {
		return nil, badf("uplink_message.frm_payload", "frame is %d bytes; want %d", n, lorawanFrameSize)
	}
	var frame [lorawanFrameSize]byte
	copy(frame[:], buf[:n])
	return decodeLoRaWANFrame(dst, device, frame)
}

func decodeLoRaWANFrame(dst []Reading, device string, f [lorawanFrameSize]byte) ([]Reading, error) {
	if f[0] != lorawanVersion {
		return nil, badf("uplink_message.frm_payload", "frame version %d; want %d", f[0], lorawanVersion)
	}
	sec := binary.BigEndian.Uint32(f[1:5])
	ms := binary.BigEndian.Uint16(f[5:7])
	if ms > 999 {
		return nil, badf("uplink_message.frm_payload", "frame milliseconds %d; want 0-999", ms)
	}
	at := time.Unix(int64(sec), int64(ms)*int64(time.Millisecond)).UTC()
	flow := float64(int32(binary.BigEndian.Uint32(f[7:11])))
	total := float64(binary.BigEndian.Uint32(f[11:15]))
	level := float64(binary.BigEndian.Uint16(f[15:17]))
	return append(dst,
		Reading{Device: device, Time: at, Variable: "flow", Value: flow / 1000, Unit: "L/s", RawValue: flow, RawUnit: "mL/s"},
		Reading{Device: device, Time: at, Variable: "totalizer", Value: total / 1000, Unit: "m3", RawValue: total, RawUnit: "L"},
		Reading{Device: device, Time: at, Variable: "level", Value: level / 100, Unit: "m", RawValue: level, RawUnit: "cm"},
	), nil
}

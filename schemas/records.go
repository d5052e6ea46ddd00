package schemas

import (
	"encoding/binary"
	"math"
	"time"
)

// Reading is one normalized reading of one variable of one catchment point:
// the value of topic telemetry.readings, whose key is the point code. Its
// schema is reading.avsc.
type Reading struct {
	// Point is the catchment point code. It must not be empty.
	Point string `avro:"point"`
	// Device is the id of the device that measured the value.
	Device string `avro:"device"`
	// Variable is the canonical variable name: flow, totalizer, level, ...
	Variable string `avro:"variable"`
	// Time is the event time, when the device measured the value.
	Time time.Time `avro:"time"`
	// Value is the value in the variable's canonical unit.
	Value float64 `avro:"value"`
	// Unit is the canonical unit of Value: "L/s", "m3", "m", ...
	Unit string `avro:"unit"`
	// Quality is a bit set of quality flags; 0 means good.
	Quality int32 `avro:"quality"`
	// RawValue is the value as the device sent it, before conversion; nil
	// when it was not converted.
	RawValue *float64 `avro:"raw_value"`
	// RawUnit is the unit of RawValue; nil when unknown or not converted.
	RawUnit *string `avro:"raw_unit"`
	// Provider is the provider (payload format) the reading was decoded with.
	Provider string `avro:"provider"`
	// ReceivedAt is when the pipeline received the raw payload.
	ReceivedAt time.Time `avro:"received_at"`
	// Source is the provenance "topic/partition/offset" of the raw record.
	Source string `avro:"source"`
}

// appendReading appends r in the order and encoding of reading.avsc, as
// w.WriteVal would, appended with encoding/binary: the reflective struct
// encoder costs more than half of a Reading's encoding, and telemetry.readings
// carries three Readings per raw record. TestReadingFastPathMatchesWriteVal
// and FuzzReadingFastPath hold it to WriteVal byte for byte; a change to
// reading.avsc or to Reading must be made here too.
func appendReading(b []byte, r *Reading) []byte {
	b = appendString(b, r.Point)
	b = appendString(b, r.Device)
	b = appendString(b, r.Variable)
	b = binary.AppendVarint(b, timestampMicros(r.Time))
	b = appendDouble(b, r.Value)
	b = appendString(b, r.Unit)
	b = binary.AppendVarint(b, int64(r.Quality))
	// Unions ["null", T]: the branch index (zig-zag: 0 is 0x00, 1 is
	// 0x02), then the value.
	if r.RawValue == nil {
		b = append(b, 0)
	} else {
		b = appendDouble(append(b, 2), *r.RawValue)
	}
	if r.RawUnit == nil {
		b = append(b, 0)
	} else {
		b = appendString(append(b, 2), *r.RawUnit)
	}
	b = appendString(b, r.Provider)
	b = binary.AppendVarint(b, timestampMicros(r.ReceivedAt))
	return appendString(b, r.Source)
}

// fastEncodingSize is room for a typical Reading (~110 bytes): Encode's
// first guess, so that it allocates once.
const fastEncodingSize = 160

// appendString appends an Avro string: its length as a long, then its
// bytes. Avro's long and int are zig-zag varints, which is what
// binary.AppendVarint writes.
func appendString(b []byte, s string) []byte {
	return append(binary.AppendVarint(b, int64(len(s))), s...)
}

// appendDouble appends an Avro double: 8 bytes, little-endian IEEE 754.
func appendDouble(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

// timestampMicros is hamba/avro's timestamp-micros encoding of t: truncated
// to the microsecond (toward zero within the second), whatever t's location.
func timestampMicros(t time.Time) int64 {
	return t.Unix()*1e6 + int64(t.Nanosecond()/1e3)
}

// ComplianceRecord is one period (an hour) of one catchment point for one
// compliance source: the value of topic compliance.records, whose key is the
// point code + "|" + source. Its schema is compliance_record.avsc.
type ComplianceRecord struct {
	// Point is the catchment point code. It must not be empty.
	Point string `avro:"point"`
	// Source is the compliance source code, e.g. "dga-subterraneas".
	Source string `avro:"source"`
	// PeriodStart is the start of the period, inclusive.
	PeriodStart time.Time `avro:"period_start"`
	// PeriodEnd is the end of the period, exclusive.
	PeriodEnd time.Time `avro:"period_end"`
	// Flow is the flow in L/s; nil when the period has no flow data.
	Flow *float64 `avro:"flow"`
	// Totalizer is the totalizer in m3; nil when the period has no totalizer
	// data.
	Totalizer *float64 `avro:"totalizer"`
	// Level is the water table depth in m; nil when the period has no level
	// data.
	Level *float64 `avro:"level"`
	// ValueMode says how Flow and Level were taken: "instant" (the first
	// reading in the one-minute bucket starting at PeriodEnd, the slot
	// instant) or "mean" (of the period's readings).
	ValueMode string `avro:"value_mode"`
	// Expected is the number of reporting slots in the period.
	Expected int32 `avro:"expected"`
	// Received is the number of slots with at least one reading.
	Received int32 `avro:"received"`
	// Version is the number of distinct readings the record reflects. Keep
	// the highest version per (point, source, period): equal versions are
	// identical, and a lower one after a restart is a partial re-emission.
	Version int32 `avro:"version"`
	// EmittedAt is the latest received_at among the readings this version
	// reflects: derived from the data, so re-emissions are identical.
	EmittedAt time.Time `avro:"emitted_at"`
}

// Notification is one notification for one user: the value of topic
// notifications, whose key is the user id. Its schema is notification.avsc.
type Notification struct {
	// ID is the idempotency key. It must not be empty.
	ID string `avro:"id"`
	// UserID is the id of the user to notify.
	UserID string `avro:"user_id"`
	// Point is the catchment point code the notification is about; nil when
	// it is about no point.
	Point *string `avro:"point"`
	// Type is the notification type.
	Type string `avro:"type"`
	// Severity is the notification's severity.
	Severity string `avro:"severity"`
	// Title is a short human-readable title.
	Title string `avro:"title"`
	// Body is the human-readable body text.
	Body string `avro:"body"`
	// Data holds structured details for templates and webhooks. A nil map
	// encodes as an empty one; it decodes as a non-nil, possibly empty, map.
	Data map[string]string `avro:"data"`
	// CreatedAt is when the notification was created.
	CreatedAt time.Time `avro:"created_at"`
}

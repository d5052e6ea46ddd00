package providers

import (
	"context"
	"errors"
	"time"
)

// Errors a caller branches on with errors.Is.
var (
	// ErrBadPayload is wrapped by every error a Decoder returns for a
	// payload it cannot decode. It is permanent: the record goes to the
	// dead-letter topic with the message as its reason.
	ErrBadPayload = errors.New("bad payload")
	// ErrUnknownProvider is wrapped by Registry.Lookup for a name that
	// was never registered.
	ErrUnknownProvider = errors.New("unknown provider")
	// ErrUnknownUnit is wrapped by Convert (and by spec and payload errors
	// built on it) for a unit not accepted for the variable.
	ErrUnknownUnit = errors.New("unknown unit")
	// ErrUnknownVariable is wrapped by Convert for a variable not in the
	// catalog (see Variables).
	ErrUnknownVariable = errors.New("unknown variable")
)

// Payload is one raw message to decode. A Decoder does not retain it nor
// any slice of Bytes.
type Payload struct {
	// Provider is the provider name, from the record's "provider" header.
	// It may be empty.
	Provider string
	// Device is the device id from the MQTT topic (the record key). A spec
	// may take the device id from the payload instead.
	Device string
	// Topic is the MQTT topic.
	Topic string
	// Bytes is the payload, unchanged.
	Bytes []byte
	// ReceivedAt is when the bridge received the message.
	ReceivedAt time.Time
}

// Reading is one measured variable in canonical units.
type Reading struct {
	// Device is the device id.
	Device string
	// Time is the event time from the payload, in UTC (ReceivedAt when the
	// spec says the payload has none).
	Time time.Time
	// Variable is the canonical variable name: "flow", "totalizer",
	// "level", ... (see Variables).
	Variable string
	// Value is in the variable's canonical unit.
	Value float64
	// Unit is the canonical unit ("L/s", "m3", "m"; see CanonicalUnit).
	Unit string
	// RawValue is the value as sent, before scale and conversion.
	RawValue float64
	// RawUnit is the unit as sent ("m3/h", "L", "cm", ...).
	RawUnit string
}

// A Decoder turns one payload into readings.
//
// Decode returns at least one reading, each with a finite Value in its
// variable's canonical unit, or an error wrapping ErrBadPayload that says
// which field is wrong; it never panics and never returns readings together
// with an error. The context is for decoders that need to look something
// up; the shipped ones are bounded by the payload size and do not consult
// it. Decode must be safe for concurrent use.
type Decoder interface {
	Decode(ctx context.Context, p Payload) ([]Reading, error)
}

// An AppendDecoder is a Decoder that can append its readings to a slice
// the caller reuses, which saves a hot caller an allocation per payload.
// AppendDecode(ctx, dst, p) appends to dst what Decode(ctx, p) returns
// and returns the extended slice, or nil and the error Decode returns (it
// may have written to dst's spare capacity meanwhile). Nothing in dst is
// retained. The shipped decoders are AppendDecoders.
type AppendDecoder interface {
	Decoder
	AppendDecode(ctx context.Context, dst []Reading, p Payload) ([]Reading, error)
}

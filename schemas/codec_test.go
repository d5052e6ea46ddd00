package schemas_test

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/schemas"
)

// Test topics; the subjects are "<topic>-value".
const (
	readingsTopic      = "telemetry.readings"
	complianceTopic    = "compliance.records"
	notificationsTopic = "notifications"
)

func ptr[T any](v T) *T { return &v }

// at is a UTC time with microsecond precision, as every decoded time is.
func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func fullReading() schemas.Reading {
	return schemas.Reading{
		Point:      "OB-0601-123",
		Device:     "kunak-00042",
		Variable:   "flow",
		Time:       at("2026-03-01T12:34:56.123456Z"),
		Value:      12.5,
		Unit:       "L/s",
		Quality:    0b101,
		RawValue:   ptr(45.0),
		RawUnit:    ptr("m3/h"),
		Provider:   "kunak-bin",
		ReceivedAt: at("2026-03-01T12:34:57.000001Z"),
		Source:     "telemetry.raw/3/1234567",
	}
}

func nullReading() schemas.Reading {
	r := fullReading()
	r.Variable, r.Unit, r.Value, r.Quality = "level", "m", -3.25, 0
	r.RawValue, r.RawUnit = nil, nil
	return r
}

func fullComplianceRecord() schemas.ComplianceRecord {
	return schemas.ComplianceRecord{
		Point:       "OB-0601-123",
		Source:      "dga-subterraneas",
		PeriodStart: at("2026-03-01T12:00:00Z"),
		PeriodEnd:   at("2026-03-01T13:00:00Z"),
		Flow:        ptr(12.5),
		Totalizer:   ptr(123456.789),
		Level:       ptr(42.1),
		ValueMode:   "mean",
		Expected:    60,
		Received:    58,
		Version:     2,
		EmittedAt:   at("2026-03-01T13:05:00.000123Z"),
	}
}

func nullComplianceRecord() schemas.ComplianceRecord {
	r := fullComplianceRecord()
	r.Flow, r.Totalizer, r.Level = nil, nil, nil
	r.ValueMode, r.Received, r.Version = "instant", 0, 1
	return r
}

func fullNotification() schemas.Notification {
	return schemas.Notification{
		ID:        "01HQ-notif-7",
		UserID:    "user-42",
		Point:     ptr("OB-0601-123"),
		Type:      "alert",
		Severity:  "critical",
		Title:     "Flow above limit",
		Body:      "Flow at OB-0601-123 is 12.5 L/s, above the 10 L/s limit.",
		Data:      map[string]string{"value": "12.5", "limit": "10", "unicode": "caudal ñandú"},
		CreatedAt: at("2026-03-01T12:35:00.5Z"),
	}
}

func nullNotification() schemas.Notification {
	n := fullNotification()
	n.Point = nil
	n.Data = map[string]string{}
	return n
}

// noRegistry is the configuration without a schema registry.
var noRegistry = config.SchemaRegistry{}

func readingCodec(t testing.TB, reg config.SchemaRegistry) *schemas.Codec[schemas.Reading] {
	t.Helper()
	c, err := schemas.NewReadingCodec(context.Background(), reg, readingsTopic)
	require.NoError(t, err)
	return c
}

// roundTrip encodes v with c (both Encode and AppendEncode), decodes it and
// requires the same value back; it returns the encoding.
func roundTrip[T any](t *testing.T, c *schemas.Codec[T], v T) []byte {
	t.Helper()
	b, err := c.Encode(&v)
	require.NoError(t, err)
	prefix := []byte("prefix")
	appended, err := c.AppendEncode(prefix, &v)
	require.NoError(t, err)
	require.Equal(t, "prefix", string(appended[:len(prefix)]))
	require.Len(t, appended[len(prefix):], len(b), "AppendEncode and Encode differ")

	for _, enc := range [][]byte{b, appended[len(prefix):]} {
		var got T
		require.NoError(t, c.Decode(enc, &got))
		require.Equal(t, v, got)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, framing := range []string{"none", "confluent"} {
		t.Run("framing="+framing, func(t *testing.T) {
			reg := noRegistry
			if framing == "confluent" {
				reg = newStandInRegistry(t).config()
			}
			ctx := context.Background()
			rc, err := schemas.NewReadingCodec(ctx, reg, readingsTopic)
			require.NoError(t, err)
			cc, err := schemas.NewComplianceRecordCodec(ctx, reg, complianceTopic)
			require.NoError(t, err)
			nc, err := schemas.NewNotificationCodec(ctx, reg, notificationsTopic)
			require.NoError(t, err)

			tests := []struct {
				name string
				run  func(t *testing.T) []byte
			}{
				{"reading/full", func(t *testing.T) []byte { return roundTrip(t, rc, fullReading()) }},
				{"reading/nulls", func(t *testing.T) []byte { return roundTrip(t, rc, nullReading()) }},
				{"compliance_record/full", func(t *testing.T) []byte { return roundTrip(t, cc, fullComplianceRecord()) }},
				{"compliance_record/nulls", func(t *testing.T) []byte { return roundTrip(t, cc, nullComplianceRecord()) }},
				{"notification/full", func(t *testing.T) []byte { return roundTrip(t, nc, fullNotification()) }},
				{"notification/nulls", func(t *testing.T) []byte { return roundTrip(t, nc, nullNotification()) }},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					b := tt.run(t)
					if framing == "none" {
						require.NotZero(t, b[0], "a plain value must never start with the magic byte")
					} else {
						require.Zero(t, b[0], "a framed value starts with the magic byte")
					}
				})
			}
		})
	}
}

func TestTimesAreMicrosecondsUTC(t *testing.T) {
	c := readingCodec(t, noRegistry)
	santiago := time.FixedZone("CLT", -3*3600)
	r := fullReading()
	r.Time = time.Date(2026, 3, 1, 9, 34, 56, 123456789, santiago)
	r.ReceivedAt = time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC) // before the epoch
	b, err := c.Encode(&r)
	require.NoError(t, err)
	var got schemas.Reading
	require.NoError(t, c.Decode(b, &got))
	require.Equal(t, time.UTC, got.Time.Location())
	require.Equal(t, at("2026-03-01T12:34:56.123456Z"), got.Time)
	require.Equal(t, at("1969-12-31T23:59:59.999999Z"), got.ReceivedAt)
}

func TestNilDataMapEncodesAsEmpty(t *testing.T) {
	c, err := schemas.NewNotificationCodec(context.Background(), noRegistry, notificationsTopic)
	require.NoError(t, err)
	n := fullNotification()
	n.Data = nil
	b, err := c.Encode(&n)
	require.NoError(t, err)
	var got schemas.Notification
	require.NoError(t, c.Decode(b, &got))
	require.NotNil(t, got.Data)
	require.Empty(t, got.Data)
}

func TestDecodeOverwritesEveryField(t *testing.T) {
	c, err := schemas.NewNotificationCodec(context.Background(), noRegistry, notificationsTopic)
	require.NoError(t, err)
	n := nullNotification()
	b, err := c.Encode(&n)
	require.NoError(t, err)
	got := fullNotification() // stale values, including map entries, must not survive
	require.NoError(t, c.Decode(b, &got))
	require.Equal(t, n, got)
}

// TestDecodableFromSchemaFileAlone is the contract: a consumer with nothing
// but the .avsc file (here hamba/avro with its default configuration, into
// generic values) reads plain values as they are and framed values after
// stripping the 5-byte header.
func TestDecodableFromSchemaFileAlone(t *testing.T) {
	text, err := os.ReadFile("reading.avsc")
	require.NoError(t, err)
	schema, err := avro.Parse(string(text))
	require.NoError(t, err)

	r := fullReading()
	plain, err := readingCodec(t, noRegistry).Encode(&r)
	require.NoError(t, err)
	framed, err := readingCodec(t, newStandInRegistry(t).config()).Encode(&r)
	require.NoError(t, err)
	require.Equal(t, plain, framed[5:], "the framed payload is the plain encoding")

	for name, b := range map[string][]byte{"framing=none": plain, "framing=confluent": framed[5:]} {
		t.Run(name, func(t *testing.T) {
			var generic map[string]any
			require.NoError(t, avro.Unmarshal(schema, b, &generic))
			require.Equal(t, r.Point, generic["point"])
			require.Equal(t, r.Device, generic["device"])
			require.Equal(t, r.Variable, generic["variable"])
			require.Equal(t, r.Time, generic["time"])
			require.Equal(t, r.Value, generic["value"])
			require.Equal(t, r.Unit, generic["unit"])
			require.Equal(t, int(r.Quality), generic["quality"])
			// hamba/avro reads a ["null", X] union as X or nil.
			require.Equal(t, *r.RawValue, generic["raw_value"])
			require.Equal(t, *r.RawUnit, generic["raw_unit"])
			require.Equal(t, r.Provider, generic["provider"])
			require.Equal(t, r.ReceivedAt, generic["received_at"])
			require.Equal(t, r.Source, generic["source"])

			var typed schemas.Reading
			require.NoError(t, avro.Unmarshal(schema, b, &typed))
			require.Equal(t, r, typed)
		})
	}

	t.Run("every schema file parses", func(t *testing.T) {
		for _, name := range []string{"reading", "compliance_record", "notification"} {
			text, err := os.ReadFile(name + ".avsc")
			require.NoError(t, err)
			embedded, err := schemas.Schema(name)
			require.NoError(t, err)
			require.Equal(t, string(text), embedded)
			s, err := avro.ParseWithCache(embedded, "", &avro.SchemaCache{})
			require.NoError(t, err, name)
			rec := s.(*avro.RecordSchema)
			require.Equal(t, "io.stackvps", rec.Namespace(), name)
			require.NotEmpty(t, rec.Doc(), name)
			for _, f := range rec.Fields() {
				require.NotEmpty(t, f.Doc(), "%s.%s has no doc", name, f.Name())
			}
			require.Equal(t, avro.String, rec.Fields()[0].Type().Type(),
				"%s: the first field must be a string (framing detection relies on it)", name)
		}
	})
}

func TestSchema(t *testing.T) {
	tests := []struct {
		name    string
		want    string // record name the text must contain
		wantErr bool
	}{
		{name: "reading", want: `"name": "Reading"`},
		{name: "reading.avsc", want: `"name": "Reading"`},
		{name: "compliance_record", want: `"name": "ComplianceRecord"`},
		{name: "notification.avsc", want: `"name": "Notification"`},
		{name: "Reading", wantErr: true},
		{name: "", wantErr: true},
		{name: "../schemas/reading", wantErr: true},
		{name: "missing", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := schemas.Schema(tt.name)
			if tt.wantErr {
				require.ErrorIs(t, err, schemas.ErrUnknownSchema)
				return
			}
			require.NoError(t, err)
			require.Contains(t, got, tt.want)
		})
	}
}

func TestEncodeRefusesEmptyFirstField(t *testing.T) {
	ctx := context.Background()
	rc := readingCodec(t, noRegistry)
	cc, err := schemas.NewComplianceRecordCodec(ctx, noRegistry, complianceTopic)
	require.NoError(t, err)
	nc, err := schemas.NewNotificationCodec(ctx, noRegistry, notificationsTopic)
	require.NoError(t, err)

	r := fullReading()
	r.Point = ""
	_, err = rc.Encode(&r)
	require.ErrorIs(t, err, schemas.ErrBadRecord)
	require.ErrorContains(t, err, `"point"`)
	dst := []byte("keep")
	out, err := rc.AppendEncode(dst, &r)
	require.ErrorIs(t, err, schemas.ErrBadRecord)
	require.Equal(t, "keep", string(out), "AppendEncode must return dst unchanged on error")
	_, err = rc.Encode(nil)
	require.ErrorIs(t, err, schemas.ErrBadRecord)

	cr := fullComplianceRecord()
	cr.Point = ""
	_, err = cc.Encode(&cr)
	require.ErrorIs(t, err, schemas.ErrBadRecord)

	n := fullNotification()
	n.ID = ""
	_, err = nc.Encode(&n)
	require.ErrorIs(t, err, schemas.ErrBadRecord)
	require.ErrorContains(t, err, `"id"`)
}

func TestDecodeBadRecord(t *testing.T) {
	c := readingCodec(t, noRegistry)
	r := fullReading()
	plain, err := c.Encode(&r)
	require.NoError(t, err)
	framed := append([]byte{0, 0, 0, 0, 7}, plain...)

	// A record with an empty point, as a foreign producer could write it.
	text, err := schemas.Schema("reading")
	require.NoError(t, err)
	schema, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	require.NoError(t, err)
	noPoint := fullReading()
	noPoint.Point = ""
	emptyPoint, err := avro.Marshal(schema, &noPoint)
	require.NoError(t, err)
	require.Zero(t, emptyPoint[0], "an empty first field encodes as byte 0")

	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"garbage", []byte("this is not avro at all, just text")},
		{"json", []byte(`{"point":"OB-1","value":1}`)},
		{"negative string length", []byte{0x01, 'a'}},
		{"huge string length", []byte{0xfe, 0xff, 0xff, 0xff, 0x0f, 'a'}},
		{"magic byte only", []byte{0}},
		{"header only", []byte{0, 0, 0, 0, 7}},
		{"short header", []byte{0, 0, 0, 7}},
		{"truncated plain", plain[:len(plain)-1]},
		{"truncated plain, half", plain[:len(plain)/2]},
		{"framed, truncated payload", framed[:len(framed)-3]},
		{"trailing bytes", append(append([]byte{}, plain...), 0x02)},
		{"framed, trailing bytes", append(append([]byte{}, framed...), 0x02, 0x02)},
		{"empty point, read as framed", emptyPoint},
		{"empty point, framed", frame(1, emptyPoint)},
		{"empty point, short", []byte{0}},
		{"bad union index", badUnion(t, plain)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got schemas.Reading
			err := c.Decode(tt.b, &got)
			require.ErrorIs(t, err, schemas.ErrBadRecord)
		})
	}

	t.Run("every truncation", func(t *testing.T) {
		for _, b := range [][]byte{plain, framed} {
			for n := range len(b) {
				var got schemas.Reading
				require.ErrorIs(t, c.Decode(b[:n], &got), schemas.ErrBadRecord, "first %d of %d bytes", n, len(b))
			}
		}
	})

	t.Run("nil target", func(t *testing.T) {
		require.Error(t, c.Decode(plain, nil))
	})
}

// badUnion returns plain (a full Reading) with the raw_value union index
// replaced by an index the union does not have.
func badUnion(t *testing.T, plain []byte) []byte {
	t.Helper()
	// Re-encode the prefix up to raw_value to find its offset.
	r := fullReading()
	off := 0
	for _, s := range []string{r.Point, r.Device, r.Variable} {
		off += varintLen(int64(len(s))) + len(s)
	}
	off += varintLen(r.Time.UnixMicro()) + 8 // time, value
	off += varintLen(int64(len(r.Unit))) + len(r.Unit)
	off += varintLen(int64(r.Quality))
	require.Equal(t, byte(2), plain[off], "raw_value's union index (1, zigzag 2) expected at offset %d", off)
	b := append([]byte{}, plain...)
	b[off] = 8 // index 4
	return b
}

func varintLen(v int64) int {
	return len(binary.AppendVarint(nil, v))
}

func TestDecodeAcceptsBothForms(t *testing.T) {
	reg := newStandInRegistry(t)
	plainCodec := readingCodec(t, noRegistry)
	framedCodec := readingCodec(t, reg.config())
	id, ok := framedCodec.SchemaID()
	require.True(t, ok)
	_, ok = plainCodec.SchemaID()
	require.False(t, ok)

	r := fullReading()
	plain, err := plainCodec.Encode(&r)
	require.NoError(t, err)
	framed, err := framedCodec.Encode(&r)
	require.NoError(t, err)
	require.Equal(t, []byte{0}, framed[:1])
	require.Equal(t, uint32(id), binary.BigEndian.Uint32(framed[1:5]))

	tests := []struct {
		name  string
		codec *schemas.Codec[schemas.Reading]
		b     []byte
	}{
		{"no registry reads plain", plainCodec, plain},
		{"no registry reads framed (id ignored)", plainCodec, framed},
		{"no registry reads framed with an unknown id", plainCodec, append([]byte{0, 0, 0, 0x30, 0x39}, plain...)},
		{"registry reads plain", framedCodec, plain},
		{"registry reads framed", framedCodec, framed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got schemas.Reading
			require.NoError(t, tt.codec.Decode(tt.b, &got))
			require.Equal(t, r, got)
		})
	}
}

func TestNewCodecErrors(t *testing.T) {
	ctx := context.Background()
	_, err := schemas.NewReadingCodec(ctx, noRegistry, "")
	require.ErrorContains(t, err, "topic must not be empty")

	// Nothing listens on port 1 of loopback: registration fails in New,
	// not at the first record.
	_, err = schemas.NewReadingCodec(ctx, config.SchemaRegistry{URL: "http://127.0.0.1:1"}, readingsTopic)
	require.ErrorContains(t, err, `registering Reading schema under subject "telemetry.readings-value"`)
}

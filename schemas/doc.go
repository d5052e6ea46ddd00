// Package schemas holds the Avro schemas of Stack VPS's contract topics and
// their Go codecs.
//
// The schemas are the .avsc files of this directory, embedded in the binary
// (see [Schema]); every record lives in namespace io.stackvps:
//
//	reading.avsc            Reading            telemetry.readings, key = point code
//	compliance_record.avsc  ComplianceRecord   compliance.records, key = point code + "|" + source
//	notification.avsc       Notification       notifications, key = user id
//
// The .avsc files are the contract: a consumer that has only them (any Avro
// library, fed by rpk or kcat) can read every topic, registry or not.
//
// # Wire format
//
// A [Codec] writes one of two forms, depending on the configuration:
//
//   - Without a schema registry (config.SchemaRegistry.URL empty), a value is
//     plain Avro binary of the record, readable with the .avsc alone.
//   - With one, a value is in the Confluent wire format: magic byte 0, the
//     schema id as a 4-byte big-endian integer, then the same Avro binary.
//     The schema is registered under subject "<topic>-value"
//     (TopicNameStrategy) when the codec is built.
//
// Decode accepts both forms, whatever the configuration, so a topic written
// before a registry was configured (or after one was removed) stays readable
// and replayable. The forms are told apart by the first byte: a framed value
// starts with 0 and is at least 5 bytes long. A plain value never starts with
// 0, because the first field of every record is a string that must not be
// empty (point, point, id): an Avro string starts with its zigzag-encoded
// length, and a length of 1 or more encodes as a first byte of 2 or more.
// Encode enforces that invariant by refusing a record whose first field is
// empty, Decode rejects such a record too, and any schema added here must
// keep a non-empty string first.
//
// # Schema evolution
//
// With a registry, a framed value whose schema id is not the codec's own is
// decoded with the writer schema fetched from the registry (once per id, then
// cached), resolved against the embedded reader schema by the Avro schema
// resolution rules: fields the writer added are skipped, fields it lacks take
// their defaults. Without a registry the id is ignored and the embedded
// schema is used as the writer schema, so only values written with the
// embedded schema decode (a value with bytes left over is rejected rather than
// misread).
//
// # Time
//
// Timestamps are Avro timestamp-micros: time.Time values are truncated to the
// microsecond when encoded and decode in UTC.
package schemas

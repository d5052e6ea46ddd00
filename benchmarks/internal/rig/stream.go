// Package rig is the benchmark rig of Stack VPS: the load the benchmarks
// offer (a fixed stream of simulated MQTT messages in the three shipped
// formats, the raw Kafka records the bridge would make of them, the readings
// the normalize stage would make of those) and the raw limits they are
// compared with (a bare QoS 1 subscriber, a bare franz-go consume+produce
// loop, a bare pgx COPY), all measured on the same machine, with the same
// data, in the same run. Only benchmarks import it.
package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/simulate"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/bridge"
	"github.com/stackvps/stackvps/stages/normalize"
)

// Discard is a logger that drops everything.
var Discard = slog.New(slog.DiscardHandler)

// Stream is a fixed sequence of messages from a simulated fleet: reading n of
// every device, then reading n+1, so consecutive messages cycle through the
// devices and the three formats (devices alternate generic-json,
// acme-registers, lorawan-ttn). Topics are "<prefix>/<provider>/<device>".
type Stream struct {
	Fleet *simulate.Fleet
	// Start is the event time of every device's first reading; readings are
	// one second apart.
	Start    time.Time
	Messages []simulate.Message
	prefix   string
}

// NewStream lays out messages messages of a fleet of devices devices.
func NewStream(prefix string, devices, messages int, start time.Time) (*Stream, error) {
	f, err := simulate.New(simulate.Config{Devices: devices, Rate: 1, TopicPrefix: prefix, Start: start})
	if err != nil {
		return nil, err
	}
	s := &Stream{Fleet: f, Start: start, Messages: make([]simulate.Message, 0, messages), prefix: prefix}
	for n := 0; len(s.Messages) < messages; n++ {
		for i := 0; i < devices && len(s.Messages) < messages; i++ {
			m, err := f.MessageAt(i, n, start)
			if err != nil {
				return nil, err
			}
			s.Messages = append(s.Messages, m)
		}
	}
	return s, nil
}

// WithPrefix returns the messages with their topic prefix replaced, for a
// round that must not see another round's messages.
func (s *Stream) WithPrefix(prefix string) []simulate.Message {
	out := make([]simulate.Message, len(s.Messages))
	for i, m := range s.Messages {
		m.Topic = prefix + strings.TrimPrefix(m.Topic, s.prefix)
		out[i] = m
	}
	return out
}

// Devices returns the fleet's devices, each mapped to its point
// (simulate.PointOf), as `simulate --register` registers them.
func (s *Stream) Devices() []points.Device {
	ids := s.Fleet.Devices()
	out := make([]points.Device, len(ids))
	for i, id := range ids {
		out[i] = points.Device{ID: id, Point: simulate.PointOf(id), Provider: s.Fleet.Provider(i), Active: true}
	}
	return out
}

// DeviceMap returns Devices as an in-memory normalize.Devices.
func (s *Stream) DeviceMap() Devices {
	m := Devices{}
	for _, d := range s.Devices() {
		m[d.ID] = d
	}
	return m
}

// Register stores the fleet's points and devices.
func (s *Stream) Register(ctx context.Context, store *points.Store) error {
	devs := s.Devices()
	for _, d := range devs {
		if err := store.UpsertPoint(ctx, points.Point{Code: d.Point, Active: true}); err != nil {
			return err
		}
	}
	return store.UpsertDevices(ctx, devs...)
}

// RawRecords returns what the bridge writes to telemetry.raw for msgs: key
// the device, value the payload, headers mqtt-topic, received-at and
// provider, record time the reception (here the reading's time plus half a
// second).
func RawRecords(msgs []simulate.Message, topic string) []pipeline.Record {
	out := make([]pipeline.Record, len(msgs))
	for i, m := range msgs {
		levels := strings.Split(m.Topic, "/")
		provider, device := levels[len(levels)-2], levels[len(levels)-1]
		received := m.Reading.Time.Add(500 * time.Millisecond).UTC()
		out[i] = pipeline.Record{
			Topic: topic, Key: []byte(device), Value: m.Payload, Time: received,
			Headers: []pipeline.Header{
				{Key: bridge.HeaderMQTTTopic, Value: []byte(m.Topic)},
				{Key: bridge.HeaderReceivedAt, Value: []byte(received.Format(time.RFC3339Nano))},
				{Key: bridge.HeaderProvider, Value: []byte(provider)},
			},
		}
	}
	return out
}

// Devices is an in-memory normalize.Devices.
type Devices map[string]points.Device

// Lookup implements normalize.Devices.
func (d Devices) Lookup(_ context.Context, id string) (points.Device, error) {
	if dev, ok := d[id]; ok {
		return dev, nil
	}
	return points.Device{}, fmt.Errorf("%w %q", normalize.ErrUnknownDevice, id)
}

// NewCodec returns the reading codec without a schema registry, as the stages
// build it when schema_registry.url is empty.
func NewCodec() (*schemas.Codec[schemas.Reading], error) {
	return schemas.NewReadingCodec(context.Background(), config.SchemaRegistry{}, "telemetry.readings")
}

// BuiltinDecoders returns a registry of the built-in providers, as
// `stackvps run` builds it when normalize.providers_dir is not set.
func BuiltinDecoders() (*providers.Registry, error) {
	reg := providers.NewRegistry()
	if err := providers.RegisterBuiltin(reg); err != nil {
		return nil, err
	}
	return reg, nil
}

// NewNormalizer returns the real normalize processor with the built-in
// providers, the reading codec without registry and devs, its metrics on a
// registry of its own.
func NewNormalizer(devs normalize.Devices) (*normalize.Normalizer, error) {
	reg, err := BuiltinDecoders()
	if err != nil {
		return nil, err
	}
	codec, err := NewCodec()
	if err != nil {
		return nil, err
	}
	return normalize.New(config.Default().Normalize, normalize.Deps{
		Decoders: reg, Devices: devs, Encoder: codec, Registerer: prometheus.NewRegistry(), Log: Discard,
	})
}

// Readings runs the real normalize processor over recs, offline, and returns
// its output: the telemetry.readings values the sink would consume, one per
// variable (three per message).
func Readings(ctx context.Context, devs Devices, recs []pipeline.Record) ([]pipeline.Record, error) {
	per, err := ReadingsPerRecord(ctx, devs, recs)
	if err != nil {
		return nil, err
	}
	out := make([]pipeline.Record, 0, 3*len(recs))
	for _, outs := range per {
		out = append(out, outs...)
	}
	return out, nil
}

// ReadingsPerRecord is Readings, grouped by input: element i holds the
// records normalize produces for recs[i].
func ReadingsPerRecord(ctx context.Context, devs Devices, recs []pipeline.Record) ([][]pipeline.Record, error) {
	n, err := NewNormalizer(devs)
	if err != nil {
		return nil, err
	}
	out := make([][]pipeline.Record, len(recs))
	for i, r := range recs {
		r.Partition, r.Offset = 0, int64(i)
		outs, err := n.Process(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("normalizing record %d (%s): %w", i, r.Key, err)
		}
		out[i] = outs
	}
	return out, nil
}

// RowDecoder is the sink's decoder, as cmd/stackvps wires it: Avro to Row.
func RowDecoder(codec *schemas.Codec[schemas.Reading]) timescale.RowDecoder {
	return func(b []byte) (timescale.Row, error) {
		var r schemas.Reading
		if err := codec.Decode(b, &r); err != nil {
			if !errors.Is(err, schemas.ErrBadRecord) {
				return timescale.Row{}, pipeline.Transient(err)
			}
			return timescale.Row{}, err
		}
		return timescale.Row{Time: r.Time, Point: r.Point, Variable: r.Variable, Value: r.Value, Quality: r.Quality,
			Device: r.Device, RawValue: r.RawValue, RawUnit: r.RawUnit}, nil
	}
}

// Rows decodes readings records into rows.
func Rows(recs []pipeline.Record) ([]timescale.Row, error) {
	codec, err := NewCodec()
	if err != nil {
		return nil, err
	}
	dec := RowDecoder(codec)
	out := make([]timescale.Row, len(recs))
	for i, r := range recs {
		if out[i], err = dec(r.Value); err != nil {
			return nil, err
		}
	}
	return out, nil
}

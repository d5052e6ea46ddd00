// Package normalize is the telemetry.raw -> telemetry.readings stage. It
// decodes each payload with its provider (a YAML spec or a code decoder),
// maps the device to its catchment point, converts every value to its
// variable's canonical unit, flags quality (range, spike, totalizer rollover
// and reset, stale values), derives flow from the totalizer when a device
// sends none, and writes one Avro Reading per variable keyed by point code.
//
// A payload that cannot be decoded, an unknown provider or device, and a
// timestamp beyond normalize.max_future_skew or older than normalize.max_age
// are permanent errors: the runtime dead-letters the raw record with the
// reason (bad_payload, unknown_provider, unknown_device, future_timestamp,
// too_old) and goes on. A database that cannot be reached while looking up a
// device is transient: the record is retried, never dead-lettered.
package normalize

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/schemas"
)

// Header keys read from telemetry.raw records (written by the bridge).
const (
	headerProvider   = "provider"
	headerMQTTTopic  = "mqtt-topic"
	headerReceivedAt = "received-at"
)

// Decoders finds a provider's decoder (providers.Registry).
type Decoders interface {
	Lookup(name string) (providers.Decoder, error)
}

// Devices maps a device id to its device (Directory).
type Devices interface {
	Lookup(ctx context.Context, id string) (points.Device, error)
}

// Encoder encodes readings (schemas.Codec[schemas.Reading]).
type Encoder interface {
	Encode(v *schemas.Reading) ([]byte, error)
}

// Deps are the normalizer's collaborators.
type Deps struct {
	Decoders   Decoders
	Devices    Devices
	Encoder    Encoder
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock timestamps are judged against; nil means time.Now.
	Now func() time.Time
}

// Normalizer is the stage's pipeline.Processor.
type Normalizer struct {
	cfg    config.Normalize
	deps   Deps
	now    func() time.Time
	assess *assessor
	met    *metrics
}

// New validates its inputs and registers the stage's metrics.
func New(cfg config.Normalize, deps Deps) (*Normalizer, error) {
	if deps.Decoders == nil || deps.Devices == nil || deps.Encoder == nil || deps.Registerer == nil || deps.Log == nil {
		return nil, errors.New("normalize: decoders, devices, encoder, registerer and log are required")
	}
	if cfg.DefaultProvider != "" {
		if _, err := deps.Decoders.Lookup(cfg.DefaultProvider); err != nil {
			return nil, fmt.Errorf("normalize.default_provider: %w", err)
		}
	}
	met, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("normalize: registering metrics: %w", err)
	}
	n := &Normalizer{cfg: cfg, deps: deps, now: deps.Now, assess: newAssessor(cfg), met: met}
	if n.now == nil {
		n.now = time.Now
	}
	return n, nil
}

// Process implements pipeline.Processor.
func (n *Normalizer) Process(ctx context.Context, rec pipeline.Record) ([]pipeline.Record, error) {
	provider := header(rec, headerProvider)
	if provider == "" {
		provider = n.cfg.DefaultProvider
	}
	if provider == "" {
		return nil, pipeline.Permanent("unknown_provider", errors.New("record has no provider header and normalize.default_provider is not set"))
	}
	dec, err := n.deps.Decoders.Lookup(provider)
	if err != nil {
		return nil, pipeline.Permanent("unknown_provider", err)
	}
	received := rec.Time
	if ra := header(rec, headerReceivedAt); ra != "" {
		if t, err := time.Parse(time.RFC3339Nano, ra); err == nil {
			received = t
		}
	}
	readings, err := dec.Decode(ctx, providers.Payload{
		Provider: provider, Device: string(rec.Key), Topic: header(rec, headerMQTTTopic),
		Bytes: rec.Value, ReceivedAt: received,
	})
	if err != nil {
		return nil, pipeline.Permanent("bad_payload", fmt.Errorf("decoding %s payload: %w", provider, err))
	}
	now := n.now()
	for _, r := range readings {
		switch {
		case r.Time.After(now.Add(n.cfg.MaxFutureSkew.Std())):
			return nil, pipeline.Permanent("future_timestamp", fmt.Errorf("device %s stamped a reading %s, %s ahead of now (normalize.max_future_skew is %s)",
				r.Device, r.Time.UTC().Format(time.RFC3339), r.Time.Sub(now).Round(time.Second), n.cfg.MaxFutureSkew))
		case r.Time.Before(now.Add(-n.cfg.MaxAge.Std())):
			return nil, pipeline.Permanent("too_old", fmt.Errorf("device %s stamped a reading %s, older than normalize.max_age (%s)",
				r.Device, r.Time.UTC().Format(time.RFC3339), n.cfg.MaxAge))
		}
	}
	// Resolve every device before producing anything: a payload is stored
	// whole or dead-lettered whole.
	devs := map[string]points.Device{}
	for _, r := range readings {
		if _, ok := devs[r.Device]; ok {
			continue
		}
		dev, err := n.deps.Devices.Lookup(ctx, r.Device)
		switch {
		case errors.Is(err, ErrUnknownDevice):
			return nil, pipeline.Permanent("unknown_device", err)
		case err != nil:
			return nil, pipeline.Transient(err)
		}
		devs[r.Device] = dev
	}
	source := rec.Topic + "/" + strconv.Itoa(int(rec.Partition)) + "/" + strconv.FormatInt(rec.Offset, 10)
	out := make([]pipeline.Record, 0, len(readings)+1)
	for _, a := range n.assess.assess(provider, readings) {
		dev := devs[a.Device]
		r := schemas.Reading{
			Point: dev.Point, Device: a.Device, Variable: a.Variable, Time: a.Time.UTC(),
			Value: a.Value, Unit: a.Unit, Quality: a.quality,
			Provider: provider, ReceivedAt: received.UTC(), Source: source,
		}
		if a.RawUnit != "" {
			raw, unit := a.RawValue, a.RawUnit
			r.RawValue, r.RawUnit = &raw, &unit
		}
		b, err := n.deps.Encoder.Encode(&r)
		if err != nil {
			return nil, pipeline.Permanent("encode", fmt.Errorf("encoding reading of %s: %w", a.Device, err))
		}
		out = append(out, pipeline.Record{Key: []byte(dev.Point), Value: b, Time: r.Time})
		n.met.readings.WithLabelValues(provider, a.Variable).Inc()
		for bit, name := range FlagNames {
			if a.quality&bit != 0 {
				n.met.flags.WithLabelValues(name).Inc()
			}
		}
		n.met.delay.Observe(received.Sub(a.Time).Seconds())
	}
	return out, nil
}

func header(rec pipeline.Record, key string) string {
	v, _ := rec.Header(key)
	return string(v)
}

type metrics struct {
	readings *prometheus.CounterVec
	flags    *prometheus.CounterVec
	delay    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "stackvps", "normalize"
	m := &metrics{
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "readings_total", Help: "Readings produced, by provider and variable."}, []string{"provider", "variable"}),
		flags: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "quality_flags_total", Help: "Readings flagged, by flag."}, []string{"flag"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "device_delay_seconds", Help: "Reception time minus measurement time: how late devices report (negative: clock ahead).",
			Buckets: []float64{-60, -1, 0, 1, 5, 30, 60, 300, 900, 3600, 21600, 86400}}),
	}
	for _, c := range []prometheus.Collector{m.readings, m.flags, m.delay} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

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
	"sync"
	"sync/atomic"
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
	// decoders caches the decoders found so far by provider name (copy on
	// write: Process reads it without locking). Only successful lookups
	// are cached, so it holds at most the registered providers.
	decoders atomic.Pointer[map[string]decoderEntry]
	cacheMu  sync.Mutex
	scratch  sync.Pool // *scratch
}

type decoderEntry struct {
	name string
	dec  providers.Decoder
}

// scratch is what one Process call needs and does not return, reused.
type scratch struct {
	devs     []resolved
	assessed []assessed
	// reading is the Avro record being encoded; raw and unit back its
	// optional fields.
	reading schemas.Reading
	raw     float64
	unit    string
}

// resolved is a device of the payload, with its point as a record key.
type resolved struct {
	id  string
	dev points.Device
	key []byte
}

func (sc *scratch) device(id string) int {
	for i := range sc.devs {
		if sc.devs[i].id == id {
			return i
		}
	}
	return -1
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
	n.scratch.New = func() any { return new(scratch) }
	return n, nil
}

// decoder returns the decoder of the provider named by the record's header
// (name, when the header is absent) and the provider's name.
func (n *Normalizer) decoder(header []byte, name string) (string, providers.Decoder, error) {
	if m := n.decoders.Load(); m != nil {
		var e decoderEntry
		var ok bool
		if header != nil {
			e, ok = (*m)[string(header)] // no allocation: a map index
		} else {
			e, ok = (*m)[name]
		}
		if ok {
			return e.name, e.dec, nil
		}
	}
	if header != nil {
		name = string(header)
	}
	d, err := n.deps.Decoders.Lookup(name)
	if err != nil {
		return "", nil, err
	}
	n.cacheMu.Lock()
	defer n.cacheMu.Unlock()
	next := map[string]decoderEntry{name: {name: name, dec: d}}
	if m := n.decoders.Load(); m != nil {
		for k, v := range *m {
			next[k] = v
		}
	}
	n.decoders.Store(&next)
	return name, d, nil
}

// Process implements pipeline.Processor.
func (n *Normalizer) Process(ctx context.Context, rec pipeline.Record) ([]pipeline.Record, error) {
	var provHeader []byte
	if v, ok := rec.Header(headerProvider); ok && len(v) > 0 {
		provHeader = v
	} else if n.cfg.DefaultProvider == "" {
		return nil, pipeline.Permanent("unknown_provider", errors.New("record has no provider header and normalize.default_provider is not set"))
	}
	provider, dec, err := n.decoder(provHeader, n.cfg.DefaultProvider)
	if err != nil {
		return nil, pipeline.Permanent("unknown_provider", err)
	}
	received := rec.Time
	if ra, ok := rec.Header(headerReceivedAt); ok && len(ra) > 0 {
		if t, ok := parseUTC(ra); ok {
			received = t
		} else if t, err := time.Parse(time.RFC3339Nano, string(ra)); err == nil {
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
	sc := n.scratch.Get().(*scratch)
	defer n.release(sc)
	// Resolve every device before producing anything: a payload is stored
	// whole or dead-lettered whole.
	for _, r := range readings {
		if sc.device(r.Device) >= 0 {
			continue
		}
		dev, err := n.deps.Devices.Lookup(ctx, r.Device)
		switch {
		case errors.Is(err, ErrUnknownDevice):
			return nil, pipeline.Permanent("unknown_device", err)
		case err != nil:
			return nil, pipeline.Transient(err)
		}
		sc.devs = append(sc.devs, resolved{id: r.Device, dev: dev})
	}
	source := rec.Topic + "/" + strconv.Itoa(int(rec.Partition)) + "/" + strconv.FormatInt(rec.Offset, 10)
	receivedUTC := received.UTC()
	sc.assessed = n.assess.appendAssessed(sc.assessed[:0], provider, readings)
	out := make([]pipeline.Record, 0, len(sc.assessed))
	for i := range sc.assessed {
		a := &sc.assessed[i]
		d := &sc.devs[sc.device(a.Device)]
		if d.key == nil {
			// Shared by the payload's records of this device: nothing
			// downstream writes to a key.
			d.key = []byte(d.dev.Point)
		}
		r := &sc.reading
		*r = schemas.Reading{
			Point: d.dev.Point, Device: a.Device, Variable: a.Variable, Time: a.Time.UTC(),
			Value: a.Value, Unit: a.Unit, Quality: a.quality,
			Provider: provider, ReceivedAt: receivedUTC, Source: source,
		}
		if a.RawUnit != "" {
			sc.raw, sc.unit = a.RawValue, a.RawUnit
			r.RawValue, r.RawUnit = &sc.raw, &sc.unit
		}
		b, err := n.deps.Encoder.Encode(r)
		if err != nil {
			return nil, pipeline.Permanent("encode", fmt.Errorf("encoding reading of %s: %w", a.Device, err))
		}
		out = append(out, pipeline.Record{Key: d.key, Value: b, Time: r.Time})
		n.met.reading(provider, a.Variable).Inc()
		if a.quality != 0 {
			for _, f := range n.met.flagCounters {
				if a.quality&f.bit != 0 {
					f.c.Inc()
				}
			}
		}
		n.met.delay.Observe(received.Sub(a.Time).Seconds())
	}
	return out, nil
}

// release returns sc to the pool without the references it held.
func (n *Normalizer) release(sc *scratch) {
	clear(sc.devs)
	sc.devs = sc.devs[:0]
	clear(sc.assessed)
	sc.assessed = sc.assessed[:0]
	sc.reading = schemas.Reading{}
	sc.unit = ""
	n.scratch.Put(sc)
}

// parseUTC parses what the bridge writes in received-at, time.RFC3339Nano
// in UTC ("2006-01-02T15:04:05.999999999Z"), without allocating. ok is false
// for anything else: the caller falls back to time.Parse.
func parseUTC(b []byte) (t time.Time, ok bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[len(b)-1] != 'Z' {
		return time.Time{}, false
	}
	digits := func(s []byte) (int, bool) {
		v := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 ||
		month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	nsec := 0
	switch frac := b[19 : len(b)-1]; {
	case len(frac) == 0:
	case frac[0] == '.' && len(frac) >= 2 && len(frac) <= 10:
		v, ok := digits(frac[1:])
		if !ok {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			v *= 10
		}
		nsec = v
	default:
		return time.Time{}, false
	}
	t = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	if t.Day() != day { // February 30th and the like: let time.Parse reject it
		return time.Time{}, false
	}
	return t, true
}

func header(rec pipeline.Record, key string) string {
	v, _ := rec.Header(key)
	return string(v)
}

type metrics struct {
	readings *prometheus.CounterVec
	flags    *prometheus.CounterVec
	delay    prometheus.Histogram
	// counters caches readings' children by provider and variable (copy
	// on write); flagCounters is flags' child of each flag, in bit order.
	counters     atomic.Pointer[map[[2]string]prometheus.Counter]
	countersMu   sync.Mutex
	flagCounters []flagCounter
}

type flagCounter struct {
	bit int32
	c   prometheus.Counter
}

// reading returns the readings counter of provider and variable.
func (m *metrics) reading(provider, variable string) prometheus.Counter {
	key := [2]string{provider, variable}
	if cs := m.counters.Load(); cs != nil {
		if c, ok := (*cs)[key]; ok {
			return c
		}
	}
	c := m.readings.WithLabelValues(provider, variable)
	m.countersMu.Lock()
	defer m.countersMu.Unlock()
	next := map[[2]string]prometheus.Counter{key: c}
	if cs := m.counters.Load(); cs != nil {
		for k, v := range *cs {
			next[k] = v
		}
	}
	m.counters.Store(&next)
	return c
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
	for bit := int32(1); bit != 0 && int(bit) <= maxFlag; bit <<= 1 {
		if name, ok := FlagNames[bit]; ok {
			m.flagCounters = append(m.flagCounters, flagCounter{bit: bit, c: m.flags.WithLabelValues(name)})
		}
	}
	return m, nil
}

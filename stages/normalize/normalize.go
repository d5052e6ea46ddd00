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
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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

// Encoder encodes readings (schemas.Codec[schemas.Reading]): AppendEncode
// appends the encoding of v to dst, and on error returns dst unchanged. It
// must not keep v or its strings.
type Encoder interface {
	AppendEncode(dst []byte, v *schemas.Reading) ([]byte, error)
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
	// decoders caches the decoders found so far (copy on write: Process
	// reads it without locking). Only successful lookups are cached, so it
	// holds at most the registered providers: a handful, which a scan
	// comparing names finds faster than hashing the name would.
	decoders atomic.Pointer[[]decoderEntry]
	cacheMu  sync.Mutex
	scratch  sync.Pool // *scratch
}

type decoderEntry struct {
	name string
	dec  providers.Decoder
	// counters are the provider's readings_total children.
	counters *variableCounters
}

// scratch is what one Process call needs and does not return, reused.
type scratch struct {
	readings []providers.Reading // decoded, when the decoder appends
	devs     []resolved
	assessed []assessed
	// reading is the Avro record being encoded; raw and unit back its
	// optional fields.
	reading schemas.Reading
	raw     float64
	unit    string
	// buf collects the keys and values of the call's output records, which
	// are copied out into mem at the end; spans locates each output's key
	// and value in it.
	buf   []byte
	spans []span
	// source backs the Source of the call's readings.
	source []byte
	// mem and recs are what the outputs of successive calls are cut from,
	// so that a call does not allocate its output: each output is sliced to
	// its own capacity, so an append to one cannot write over another, and
	// a chunk is garbage once the outputs cut from it are (the producer
	// holds them until Kafka acknowledges them).
	mem  []byte
	recs []pipeline.Record
	// strs interns the device ids and MQTT topics of the records this
	// scratch has seen: a fleet sends the same few thousand again and
	// again, and a map lookup by bytes does not allocate.
	strs map[string]string
}

// maxInterned bounds scratch.strs; past it the map starts over.
const maxInterned = 4096

// intern returns b as a string, the same one each time while it stays in
// sc.strs.
func (sc *scratch) intern(b []byte) string {
	if s, ok := sc.strs[string(b)]; ok {
		return s
	}
	if len(sc.strs) >= maxInterned || sc.strs == nil {
		sc.strs = make(map[string]string, 256)
	}
	s := string(b)
	sc.strs[s] = s
	return s
}

// Sizes of the chunks scratch.mem and scratch.recs are cut from: a call
// whose output is bigger gets its own.
const (
	memChunk  = 16 << 10
	recsChunk = 64
)

// take returns n bytes cut from sc.mem.
func (sc *scratch) take(n int) []byte {
	if n > len(sc.mem) {
		if n > memChunk/4 {
			return make([]byte, n)
		}
		sc.mem = make([]byte, memChunk)
	}
	b := sc.mem[:n:n]
	sc.mem = sc.mem[n:]
	return b
}

// records returns n zero records cut from sc.recs.
func (sc *scratch) records(n int) []pipeline.Record {
	if n > len(sc.recs) {
		if n > recsChunk/4 {
			return make([]pipeline.Record, n)
		}
		sc.recs = make([]pipeline.Record, recsChunk)
	}
	r := sc.recs[:n:n]
	sc.recs = sc.recs[n:]
	return r
}

// span is buf[start:end].
type span struct{ start, end int }

// resolved is a device of the payload, with its point as a record key.
type resolved struct {
	id  string
	dev points.Device
	// key locates the point code in scratch.buf once keyed.
	key   span
	keyed bool
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

// decoder returns the decoder entry of the provider named by the record's
// header (name, when the header is absent).
func (n *Normalizer) decoder(header []byte, name string) (decoderEntry, error) {
	if header != nil {
		name = unsafeString(header)
	}
	if l := n.decoders.Load(); l != nil {
		for _, e := range *l {
			if e.name == name {
				return e, nil
			}
		}
	}
	name = strings.Clone(name)
	d, err := n.deps.Decoders.Lookup(name)
	if err != nil {
		return decoderEntry{}, err
	}
	n.cacheMu.Lock()
	defer n.cacheMu.Unlock()
	next := []decoderEntry{}
	if l := n.decoders.Load(); l != nil {
		for _, e := range *l {
			if e.name == name {
				return e, nil // added meanwhile
			}
		}
		next = append(next, *l...)
	}
	e := decoderEntry{name: name, dec: d, counters: &variableCounters{vec: n.met.readings, provider: name}}
	next = append(next, e)
	n.decoders.Store(&next)
	return e, nil
}

// unsafeString is b as a string without copying it, for comparisons that
// do not keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Process implements pipeline.Processor.
func (n *Normalizer) Process(ctx context.Context, rec pipeline.Record) ([]pipeline.Record, error) {
	provHeader, receivedAt, topic := headers(rec.Headers)
	if len(provHeader) == 0 {
		if n.cfg.DefaultProvider == "" {
			return nil, pipeline.Permanent("unknown_provider", errors.New("record has no provider header and normalize.default_provider is not set"))
		}
		provHeader = nil
	}
	ent, err := n.decoder(provHeader, n.cfg.DefaultProvider)
	if err != nil {
		return nil, pipeline.Permanent("unknown_provider", err)
	}
	provider := ent.name
	received := rec.Time
	if len(receivedAt) > 0 {
		if t, ok := parseUTC(receivedAt); ok {
			received = t
		} else if t, err := time.Parse(time.RFC3339Nano, string(receivedAt)); err == nil {
			received = t
		}
	}
	sc := n.scratch.Get().(*scratch)
	defer n.release(sc)
	payload := providers.Payload{
		Provider: provider, Device: sc.intern(rec.Key), Topic: sc.intern(topic),
		Bytes: rec.Value, ReceivedAt: received,
	}
	var readings []providers.Reading
	if ad, ok := ent.dec.(providers.AppendDecoder); ok {
		readings, err = ad.AppendDecode(ctx, sc.readings[:0], payload)
		if readings != nil {
			sc.readings = readings
		}
	} else {
		readings, err = ent.dec.Decode(ctx, payload)
	}
	if err != nil {
		return nil, pipeline.Permanent("bad_payload", fmt.Errorf("decoding %s payload: %w", provider, err))
	}
	now := n.now()
	latest, earliest := now.Add(n.cfg.MaxFutureSkew.Std()), now.Add(-n.cfg.MaxAge.Std())
	for _, r := range readings {
		switch {
		case r.Time.After(latest):
			return nil, pipeline.Permanent("future_timestamp", fmt.Errorf("device %s stamped a reading %s, %s ahead of now (normalize.max_future_skew is %s)",
				r.Device, r.Time.UTC().Format(time.RFC3339), r.Time.Sub(now).Round(time.Second), n.cfg.MaxFutureSkew))
		case r.Time.Before(earliest):
			return nil, pipeline.Permanent("too_old", fmt.Errorf("device %s stamped a reading %s, older than normalize.max_age (%s)",
				r.Device, r.Time.UTC().Format(time.RFC3339), n.cfg.MaxAge))
		}
	}
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
	// The readings are encoded before the call returns, and the encoder
	// keeps none of their strings: the source need not be copied out of
	// scratch.
	sc.source = appendSource(sc.source[:0], rec.Topic, rec.Partition, rec.Offset)
	source := unsafeString(sc.source)
	receivedUTC := received.UTC()
	sc.assessed = n.assess.appendAssessed(sc.assessed[:0], provider, readings)
	out := sc.records(len(sc.assessed))
	for i := range sc.assessed {
		a := &sc.assessed[i]
		d := &sc.devs[sc.device(a.Device)]
		if !d.keyed {
			// Shared by the payload's records of this device: nothing
			// downstream writes to a key.
			d.key.start = len(sc.buf)
			sc.buf = append(sc.buf, d.dev.Point...)
			d.key.end, d.keyed = len(sc.buf), true
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
		start := len(sc.buf)
		sc.buf, err = n.deps.Encoder.AppendEncode(sc.buf, r)
		if err != nil {
			return nil, pipeline.Permanent("encode", fmt.Errorf("encoding reading of %s: %w", a.Device, err))
		}
		sc.spans = append(sc.spans, d.key, span{start, len(sc.buf)})
		out[i].Time = r.Time
		ent.counters.get(a.Variable).Inc()
		if a.quality != 0 {
			for _, f := range n.met.flagCounters {
				if a.quality&f.bit != 0 {
					f.c.Inc()
				}
			}
		}
		n.met.delay.Observe(received.Sub(a.Time).Seconds())
	}
	mem := sc.take(len(sc.buf))
	copy(mem, sc.buf)
	for i := range out {
		k, v := sc.spans[2*i], sc.spans[2*i+1]
		out[i].Key = mem[k.start:k.end:k.end]
		out[i].Value = mem[v.start:v.end:v.end]
	}
	return out, nil
}

// headers returns the values of the provider, received-at and mqtt-topic
// headers in one pass, each the last of its name (as Record.Header does).
func headers(hs []pipeline.Header) (provider, receivedAt, topic []byte) {
	for i := range hs {
		switch hs[i].Key {
		case headerProvider:
			provider = hs[i].Value
		case headerReceivedAt:
			receivedAt = hs[i].Value
		case headerMQTTTopic:
			topic = hs[i].Value
		}
	}
	return provider, receivedAt, topic
}

// appendSource appends the Reading.Source of a raw record,
// "topic/partition/offset", to b.
func appendSource(b []byte, topic string, partition int32, offset int64) []byte {
	b = append(b, topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, offset, 10)
}

// release returns sc to the pool without the references it held.
func (n *Normalizer) release(sc *scratch) {
	clear(sc.readings[:cap(sc.readings)])
	sc.readings = sc.readings[:0]
	clear(sc.devs)
	sc.devs = sc.devs[:0]
	clear(sc.assessed)
	sc.assessed = sc.assessed[:0]
	sc.reading = schemas.Reading{}
	sc.unit = ""
	if cap(sc.buf) > maxScratchBuf {
		sc.buf = nil // a rare huge payload must not pin its buffer
	}
	sc.buf = sc.buf[:0]
	sc.spans = sc.spans[:0]
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

// maxScratchBuf is the largest output buffer a scratch keeps between calls.
const maxScratchBuf = 64 << 10

type metrics struct {
	readings *prometheus.CounterVec
	flags    *prometheus.CounterVec
	delay    prometheus.Histogram
	// flagCounters is flags' child of each flag, in bit order.
	flagCounters []flagCounter
}

type flagCounter struct {
	bit int32
	c   prometheus.Counter
}

// variableCounters caches one provider's readings_total children by
// variable. A provider reads a handful of variables, so a slice searched
// by string comparison beats hashing a (provider, variable) key per
// reading; it is copied on write, so get reads it without locking.
type variableCounters struct {
	vec      *prometheus.CounterVec
	provider string
	list     atomic.Pointer[[]variableCounter]
	mu       sync.Mutex // serializes additions
}

type variableCounter struct {
	variable string
	c        prometheus.Counter
}

// get returns the readings counter of the provider and variable.
func (vc *variableCounters) get(variable string) prometheus.Counter {
	if l := vc.list.Load(); l != nil {
		for _, e := range *l {
			if e.variable == variable {
				return e.c
			}
		}
	}
	vc.mu.Lock()
	defer vc.mu.Unlock()
	var next []variableCounter
	if l := vc.list.Load(); l != nil {
		for _, e := range *l {
			if e.variable == variable {
				return e.c // added meanwhile
			}
		}
		next = append(next, *l...)
	}
	c := vc.vec.WithLabelValues(vc.provider, variable)
	next = append(next, variableCounter{variable: strings.Clone(variable), c: c})
	vc.list.Store(&next)
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

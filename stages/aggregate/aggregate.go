package aggregate

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
)

// Source is the source of the records this stage emits: one per point and
// hour, before the compliance stage fans them out to regulators.
const Source = "hourly"

// HeaderHourStats is the header of each compliance.records record that
// carries the hour's statistics of every variable, as JSON (see HourStats).
const HeaderHourStats = "hour-stats"

// Decoder decodes telemetry.readings values (schemas.Codec[schemas.Reading]).
// An error wrapping schemas.ErrBadRecord is permanent (the record is
// dead-lettered); any other is transient (the registry is unreachable).
type Decoder interface {
	Decode(b []byte, v *schemas.Reading) error
}

// Encoder encodes compliance.records values
// (schemas.Codec[schemas.ComplianceRecord]).
type Encoder interface {
	Encode(v *schemas.ComplianceRecord) ([]byte, error)
}

// Deps are the aggregator's collaborators.
type Deps struct {
	// Decoder, Encoder, Registerer and Log are required.
	Decoder    Decoder
	Encoder    Encoder
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the stage's clock (clock-skew checks, idleness); nil means
	// time.Now. Flush uses the time the runtime passes it.
	Now func() time.Time
	// TotalizerRollover is, per provider, the value at which its totalizer
	// wraps (normalize.totalizer_rollover), used to count the volume across
	// a reading flagged rollover; nil counts nothing across a rollover.
	TotalizerRollover map[string]float64
}

// Aggregator is the aggregate stage's processor: it implements
// pipeline.Processor, pipeline.Flusher, pipeline.OffsetHolder and
// pipeline.PartitionDropper. Process, Flush, HeldOffsets and DropPartitions
// are safe for concurrent use. Lock order: Aggregator.mu, then a partition's
// mu.
type Aggregator struct {
	cfg      config.Aggregate
	deps     Deps
	now      func() time.Time
	lateness time.Duration
	skew     time.Duration
	idle     time.Duration
	interval time.Duration
	expected int32
	slotVars map[string]bool
	met      *metrics
	log      *slog.Logger

	mu    sync.Mutex // guards parts (the map, not the partitions)
	parts map[partKey]*partition
}

// New validates cfg (as config.Aggregate.Validate does, so a hand-built
// configuration fails here too) and registers the stage's metrics on
// deps.Registerer.
func New(cfg config.Aggregate, deps Deps) (*Aggregator, error) {
	if deps.Decoder == nil || deps.Encoder == nil || deps.Registerer == nil || deps.Log == nil {
		return nil, errors.New("aggregate: decoder, encoder, registerer and log are required")
	}
	var problems []error
	for _, d := range []struct {
		key string
		v   config.Duration
	}{
		{"aggregate.allowed_lateness", cfg.AllowedLateness}, {"aggregate.clock_skew", cfg.ClockSkew},
		{"aggregate.idle_timeout", cfg.IdleTimeout}, {"aggregate.expected_interval", cfg.ExpectedInterval},
	} {
		if d.v <= 0 {
			problems = append(problems, fmt.Errorf("%s: must be positive; got %s", d.key, d.v))
		}
	}
	if cfg.ExpectedInterval.Std() > time.Hour {
		problems = append(problems, fmt.Errorf("aggregate.expected_interval: must be at most 1h; got %s", cfg.ExpectedInterval))
	}
	slotVars := map[string]bool{VariableTotalizer: true}
	switch cfg.ValueMode {
	case "instant":
		slotVars[VariableFlow], slotVars[VariableLevel] = true, true
	case "mean":
	default:
		problems = append(problems, fmt.Errorf("aggregate.value_mode: must be instant or mean; got %q", cfg.ValueMode))
	}
	if err := errors.Join(problems...); err != nil {
		return nil, err
	}
	met, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("aggregate: registering metrics: %w", err)
	}
	a := &Aggregator{
		cfg: cfg, deps: deps, now: deps.Now,
		lateness: cfg.AllowedLateness.Std(), skew: cfg.ClockSkew.Std(), idle: cfg.IdleTimeout.Std(),
		interval: cfg.ExpectedInterval.Std(),
		expected: int32((time.Hour + cfg.ExpectedInterval.Std() - 1) / cfg.ExpectedInterval.Std()),
		slotVars: slotVars, met: met, log: deps.Log,
		parts: map[partKey]*partition{},
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// deadline is when, on a partition's arrival clock, the window of the hour
// starting at start stops taking readings and is released: its end, plus
// the slot bucket, plus allowed_lateness.
func (a *Aggregator) deadline(start time.Time) time.Time {
	return start.Add(time.Hour + slotWidth + a.lateness)
}

// Process implements pipeline.Processor: it adds one reading to its windows
// and returns no record (records are emitted by Flush). A value that is not
// a Reading, a reading stamped beyond aggregate.clock_skew ahead of its
// reception (reason clock_skew), a non-finite value (bad_value) and a
// reading whose hour was already released (too_late) are permanent errors:
// the runtime dead-letters the record to telemetry.readings.dlq and the
// reading moves nothing. A decoder that cannot reach the schema registry is
// a transient error.
func (a *Aggregator) Process(_ context.Context, rec pipeline.Record) ([]pipeline.Record, error) {
	var r schemas.Reading
	if err := a.deps.Decoder.Decode(rec.Value, &r); err != nil {
		if errors.Is(err, schemas.ErrBadRecord) {
			a.met.readings.WithLabelValues("bad_record").Inc()
			return nil, pipeline.Permanent("bad_record", fmt.Errorf("decoding reading: %w", err))
		}
		return nil, pipeline.Transient(fmt.Errorf("decoding reading: %w", err))
	}
	p := a.partition(partKey{rec.Topic, rec.Partition})
	p.mu.Lock()
	defer p.mu.Unlock()
	return nil, p.add(a, rec.Offset, &r, a.now())
}

func (a *Aggregator) partition(k partKey) *partition {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.parts[k]
	if p == nil {
		p = newPartition(k)
		a.parts[k] = p
	}
	return p
}

// sortedPartitions returns the partitions in a stable order.
func (a *Aggregator) sortedPartitions() []*partition {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := make([]*partition, 0, len(a.parts))
	for _, p := range a.parts {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(x, y *partition) int {
		return cmp.Or(cmp.Compare(x.key.topic, y.key.topic), cmp.Compare(x.key.id, y.key.id))
	})
	return ps
}

// Flush implements pipeline.Flusher. With now the processing time, it
// closes the windows every device of their point has passed (or is idle
// for), emits a compliance record for every closed window whose content
// changed since its last emission (the first emission, or a correction), and
// releases the windows whose lateness deadline passed. A record that cannot
// be encoded is a permanent error, logged and counted by the runtime; the
// other records are still returned.
func (a *Aggregator) Flush(_ context.Context, now time.Time) ([]pipeline.Record, error) {
	var (
		out              []pipeline.Record
		errs             []error
		windows, devices int
	)
	for _, p := range a.sortedPartitions() {
		p.mu.Lock()
		recs, err := p.flush(a, now)
		w, d := p.counts()
		p.mu.Unlock()
		out = append(out, recs...)
		if err != nil {
			errs = append(errs, err)
		}
		windows += w
		devices += d
	}
	a.met.windows.Set(float64(windows))
	a.met.devices.Set(float64(devices))
	if len(errs) > 0 {
		return out, pipeline.Permanent("encode", errors.Join(errs...))
	}
	return out, nil
}

// HeldOffsets implements pipeline.OffsetHolder: per partition, the latest
// record high (a record whose received_at is at least every earlier one's)
// at or before the first record of every window still open. Replaying from
// there rebuilds every open window whole and the arrival clock exactly.
func (a *Aggregator) HeldOffsets() map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	for _, p := range a.sortedPartitions() {
		p.mu.Lock()
		o, ok := p.held()
		p.mu.Unlock()
		if !ok {
			continue
		}
		if out[p.key.topic] == nil {
			out[p.key.topic] = map[int32]int64{}
		}
		out[p.key.topic][p.key.id] = o
	}
	return out
}

// DropPartitions implements pipeline.PartitionDropper: the state built from
// the partitions is dropped; their next owner rebuilds it from the committed
// (held) offsets.
func (a *Aggregator) DropPartitions(partitions map[string][]int32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for topic, ids := range partitions {
		for _, id := range ids {
			delete(a.parts, partKey{topic, id})
		}
	}
}

// record builds the compliance record of w's current content.
func (a *Aggregator) record(code string, w *window) (pipeline.Record, error) {
	cr := schemas.ComplianceRecord{
		Point: code, Source: Source,
		PeriodStart: w.start, PeriodEnd: w.end(),
		ValueMode: a.cfg.ValueMode,
		Expected:  a.expected, Received: w.received(a.interval),
		Version: w.n, EmittedAt: w.maxReceived.UTC(),
	}
	if s, ok := w.slotSample(VariableTotalizer); ok {
		cr.Totalizer = &s.v
	}
	for _, v := range []struct {
		name string
		dst  **float64
	}{{VariableFlow, &cr.Flow}, {VariableLevel, &cr.Level}} {
		if a.cfg.ValueMode == "mean" {
			if m, ok := w.mean(v.name); ok {
				*v.dst = &m
			}
		} else if s, ok := w.slotSample(v.name); ok {
			val := s.v
			*v.dst = &val
		}
	}
	value, err := a.deps.Encoder.Encode(&cr)
	if err != nil {
		return pipeline.Record{}, fmt.Errorf("encoding the record of %s for %s: %w", code, w.start.Format(time.RFC3339), err)
	}
	stats, err := json.Marshal(w.stats())
	if err != nil {
		return pipeline.Record{}, fmt.Errorf("encoding the statistics of %s for %s: %w", code, w.start.Format(time.RFC3339), err)
	}
	a.log.Debug("emitting hourly record", "point", code, "period_start", w.start, "version", w.n, "correction", w.emitted > 0)
	return pipeline.Record{
		Key:     []byte(code + "|" + Source),
		Value:   value,
		Headers: []pipeline.Header{{Key: HeaderHourStats, Value: stats}},
		Time:    cr.EmittedAt,
	}, nil
}

// metrics are the stage's own metrics; the runtime adds records in and out,
// errors by reason, DLQ and latency.
type metrics struct {
	readings    *prometheus.CounterVec
	late        *prometheus.CounterVec
	corrections prometheus.Counter
	emitted     prometheus.Counter
	closes      *prometheus.CounterVec
	windows     prometheus.Gauge
	devices     prometheus.Gauge
	delay       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "stackvps", "aggregate"
	m := &metrics{
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "readings_total",
			Help: "Readings consumed, by outcome: accepted, duplicate (same point, variable and time as one already counted), too_late, clock_skew, bad_value, bad_record."},
			[]string{"outcome"}),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "late_readings_total",
			Help: "Readings that arrived after their hour was emitted, by outcome: corrected (a correction is emitted) or too_late (the hour was released; dead-lettered)."},
			[]string{"outcome"}),
		corrections: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "corrections_total",
			Help: "Hourly records re-emitted with a higher version because late readings changed them."}),
		emitted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_emitted_total",
			Help: "Hourly records emitted to compliance.records, corrections included."}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "window_closes_total",
			Help: "Hourly windows closed, by cause: watermark (every device passed the slot instant), idle (an idle device was passed over), lateness (a device still behind at the lateness deadline)."},
			[]string{"cause"}),
		windows: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "windows_open",
			Help: "Hourly windows held in memory (not yet released)."}),
		devices: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "devices",
			Help: "Devices whose watermark is tracked."}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "emit_delay_seconds",
			Help:    "Processing time of an hour's first emission minus the hour's end.",
			Buckets: []float64{30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400}}),
	}
	for _, c := range []prometheus.Collector{m.readings, m.late, m.corrections, m.emitted, m.closes, m.windows, m.devices, m.delay} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Package simulate is a fleet of simulated water-telemetry devices publishing
// over MQTT in several vendor formats, with optional faults (bad payloads,
// duplicates, clock skew, bursts). The readings are deterministic: device i's
// n-th reading is the same on every run, so tests can compute what the
// pipeline must store.
package simulate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes a fleet and how it publishes.
type Config struct {
	// Devices is the number of devices. Default 50.
	Devices int
	// Rate is readings per device per second; 0 publishes as fast as the
	// broker takes them (Count is then required). The CLI's default is 1.
	Rate float64
	// Step is the event-time spacing of a device's readings; zero means
	// 1/Rate (1s when Rate is 0). With Rate 0 a fleet publishes hours of
	// history in seconds: Step 1m and Count 1500 are a day of one-minute
	// readings.
	Step time.Duration
	// Count is readings per device; 0 with Duration 0 means until ctx ends.
	Count int
	// Duration stops publishing after this long; 0 means no limit.
	Duration time.Duration
	// Formats are provider names devices cycle through. Default all.
	Formats []string
	// TopicPrefix starts every topic: <prefix>/<provider>/<device>. Default
	// "telemetry".
	TopicPrefix string
	// QoS of the publishes, 0 or 1. Default 1.
	QoS byte
	// Start is the event time of every device's first reading; zero means
	// the moment Run starts. Each next reading is Step later.
	Start time.Time
	// Concurrency is the number of publishes in flight. Default 64.
	Concurrency int
	// Faults are optional misbehaviours.
	Faults Faults
	// Seed makes fault choices reproducible. Default 1.
	Seed uint64
}

// Faults are misbehaviours a real fleet shows.
type Faults struct {
	// BadRatio of messages are replaced by a malformed payload.
	BadRatio float64
	// DuplicateRatio of messages are published twice.
	DuplicateRatio float64
	// SkewedDevices is the fraction of devices whose clock is off by Skew.
	SkewedDevices float64
	Skew          time.Duration
	// BurstEvery makes each device hold its readings and publish them all
	// at once every BurstEvery (a gateway flushing its backlog).
	BurstEvery time.Duration
}

// Publisher sends one MQTT message.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte) error
}

// Message is one publish the fleet makes.
type Message struct {
	Topic   string
	Payload []byte
	Reading Reading // what the payload encodes (zero for a bad payload)
	Bad     bool
}

// Stats counts what a run published.
type Stats struct {
	Published  int64
	Failed     int64
	Bad        int64
	Duplicates int64
	ByProvider map[string]int64
	Elapsed    time.Duration
}

// Fleet is a configured set of devices.
type Fleet struct {
	cfg     Config
	formats []Format
	devices []device
}

type device struct {
	id     string
	format Format
	skew   time.Duration
	base   float64 // mean flow, L/s
	phase  float64
}

// New validates cfg, applies defaults and lays out the devices.
func New(cfg Config) (*Fleet, error) {
	if cfg.Devices == 0 {
		cfg.Devices = 50
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = "telemetry"
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 64
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	all := Formats()
	if len(cfg.Formats) == 0 {
		for name := range all {
			cfg.Formats = append(cfg.Formats, name)
		}
		sort.Strings(cfg.Formats)
	}
	switch {
	case cfg.Devices < 0:
		return nil, fmt.Errorf("devices must be positive; got %d", cfg.Devices)
	case cfg.Rate < 0:
		return nil, fmt.Errorf("rate must not be negative; got %g", cfg.Rate)
	case cfg.Step < 0:
		return nil, fmt.Errorf("step must not be negative; got %s", cfg.Step)
	case cfg.Rate == 0 && cfg.Count == 0:
		return nil, errors.New("rate 0 (as fast as possible) needs a count")
	case cfg.QoS > 1:
		return nil, fmt.Errorf("qos must be 0 or 1; got %d", cfg.QoS)
	case cfg.Faults.BadRatio < 0 || cfg.Faults.BadRatio > 1 || cfg.Faults.DuplicateRatio < 0 || cfg.Faults.DuplicateRatio > 1 ||
		cfg.Faults.SkewedDevices < 0 || cfg.Faults.SkewedDevices > 1:
		return nil, errors.New("fault ratios must be between 0 and 1")
	}
	f := &Fleet{cfg: cfg}
	for _, name := range cfg.Formats {
		ft, ok := all[name]
		if !ok {
			known := make([]string, 0, len(all))
			for k := range all {
				known = append(known, k)
			}
			sort.Strings(known)
			return nil, fmt.Errorf("unknown format %q (known: %v)", name, known)
		}
		f.formats = append(f.formats, ft)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	nSkewed := int(math.Round(cfg.Faults.SkewedDevices * float64(cfg.Devices)))
	for i := range cfg.Devices {
		ft := f.formats[i%len(f.formats)]
		d := device{
			id:     fmt.Sprintf("%s-%05d", prefixOf(ft), i+1),
			format: ft,
			base:   5 + float64(i%10)*4.5,
			phase:  rng.Float64() * 2 * math.Pi,
		}
		if i < nSkewed {
			d.skew = cfg.Faults.Skew
		}
		f.devices = append(f.devices, d)
	}
	return f, nil
}

func prefixOf(f Format) string {
	switch f.(type) {
	case GenericJSON:
		return "gen"
	case AcmeRegisters:
		return "acme"
	case LoRaWAN:
		return "lw"
	}
	return "dev"
}

// PointOf is the catchment point code `simulate --register` gives a device.
func PointOf(device string) string { return "P-" + device }

// Provider returns the provider (format) of device i.
func (f *Fleet) Provider(i int) string { return f.devices[i].format.Provider() }

// Config returns the configuration with its defaults applied.
func (f *Fleet) Config() Config { return f.cfg }

// Devices returns the device ids.
func (f *Fleet) Devices() []string {
	out := make([]string, len(f.devices))
	for i, d := range f.devices {
		out[i] = d.id
	}
	return out
}

// interval is the event-time spacing of a device's readings.
func (f *Fleet) interval() time.Duration {
	if f.cfg.Step > 0 {
		return f.cfg.Step
	}
	if f.cfg.Rate == 0 {
		return time.Second
	}
	return time.Duration(float64(time.Second) / f.cfg.Rate)
}

// ReadingAt returns device i's n-th reading (0-based) for a fleet started at
// start, as the device reports it (its clock skew included).
func (f *Fleet) ReadingAt(i, n int, start time.Time) Reading {
	d := f.devices[i]
	step := f.interval()
	t := start.Add(time.Duration(n) * step).Add(d.skew).Truncate(time.Millisecond)
	hours := float64(n) * step.Hours()
	flow := d.base * (1 + 0.3*math.Sin(d.phase+2*math.Pi*hours/24))
	flow = math.Round(flow*1000) / 1000
	// The totalizer integrates the flow, in whole litres.
	litres := 500_000 + float64(i)*10_000 + d.base*float64(n)*step.Seconds()
	// Level sensors jitter by a centimetre: without it a slow trend repeats
	// the same value for minutes, which normalize rightly flags as stale.
	level := 8 + 4*math.Sin(d.phase+2*math.Pi*hours/(24*7)) + 0.01*float64(int(hash(fmt.Sprint(d.id, n))%3)-1)
	return Reading{
		Device:    d.id,
		Time:      t,
		Flow:      flow,
		Totalizer: math.Round(litres) / 1000,
		Level:     math.Round(level*100) / 100,
	}
}

// MessageAt returns the message for device i's n-th reading.
func (f *Fleet) MessageAt(i, n int, start time.Time) (Message, error) {
	d := f.devices[i]
	r := f.ReadingAt(i, n, start)
	payload, err := d.format.Encode(r)
	if err != nil {
		return Message{}, err
	}
	return Message{Topic: f.cfg.TopicPrefix + "/" + d.format.Provider() + "/" + d.id, Payload: payload, Reading: r}, nil
}

// Run publishes until Count readings per device are out, Duration passed or
// ctx ends, and reports what it did. Publish failures are counted, not
// retried: the MQTT client already retries what it can.
func (f *Fleet) Run(ctx context.Context, pub Publisher) (Stats, error) {
	start := f.cfg.Start
	began := time.Now()
	if start.IsZero() {
		start = began
	}
	// The duration stops scheduling new readings; publishes already in
	// flight still get their PUBACK (under ctx), so none is miscounted.
	sched := ctx
	if f.cfg.Duration > 0 {
		var cancel context.CancelFunc
		sched, cancel = context.WithTimeout(ctx, f.cfg.Duration)
		defer cancel()
	}
	var (
		stats      Stats
		mu         sync.Mutex
		published  atomic.Int64
		failed     atomic.Int64
		bad, dupes atomic.Int64
		firstErr   error
	)
	stats.ByProvider = map[string]int64{}
	rng := rand.New(rand.NewPCG(f.cfg.Seed, 0xfa17))
	sem := make(chan struct{}, f.cfg.Concurrency)
	var wg sync.WaitGroup
	send := func(m Message) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := pub.Publish(ctx, m.Topic, m.Payload, f.cfg.QoS); err != nil {
				failed.Add(1)
				mu.Lock()
				if firstErr == nil && ctx.Err() == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			published.Add(1)
			mu.Lock()
			stats.ByProvider[providerOf(m.Topic)]++
			mu.Unlock()
		})
	}
	step := f.interval()
	pace := time.Second
	if f.cfg.Rate > 0 {
		pace = time.Duration(float64(time.Second) / f.cfg.Rate)
	}
	burst := f.cfg.Faults.BurstEvery
	var held []Message
	for n := 0; f.cfg.Count == 0 || n < f.cfg.Count; n++ {
		if f.cfg.Rate > 0 {
			// Pace on wall time: reading n of every device is due at
			// began + n/Rate.
			wait := time.Until(began.Add(time.Duration(n) * pace))
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-sched.Done():
					t.Stop()
				case <-t.C:
				}
			}
		}
		if sched.Err() != nil {
			break
		}
		for i := range f.devices {
			m, err := f.MessageAt(i, n, start)
			if err != nil {
				return stats, err
			}
			if rng.Float64() < f.cfg.Faults.BadRatio {
				m.Payload, m.Bad, m.Reading = badPayload(rng, m.Payload), true, Reading{}
				bad.Add(1)
			}
			if burst > 0 {
				held = append(held, m)
				continue
			}
			send(m)
			if rng.Float64() < f.cfg.Faults.DuplicateRatio {
				dupes.Add(1)
				send(m)
			}
		}
		if burst > 0 && (time.Duration(n+1)*step)%burst < step {
			for _, m := range held {
				send(m)
			}
			held = held[:0]
		}
	}
	for _, m := range held {
		if sched.Err() != nil {
			break
		}
		send(m)
	}
	wg.Wait()
	stats.Published, stats.Failed, stats.Bad, stats.Duplicates = published.Load(), failed.Load(), bad.Load(), dupes.Load()
	stats.Elapsed = time.Since(began)
	return stats, firstErr
}

func providerOf(topic string) string {
	for i := range topic {
		if topic[i] == '/' {
			rest := topic[i+1:]
			for j := range rest {
				if rest[j] == '/' {
					return rest[:j]
				}
			}
			return rest
		}
	}
	return topic
}

// badPayload returns a payload no decoder accepts: truncated JSON, not JSON
// at all, or an empty object.
func badPayload(rng *rand.Rand, good []byte) []byte {
	switch rng.IntN(3) {
	case 0:
		return slices.Clone(good[:len(good)/2])
	case 1:
		return []byte("\x00\x01garbage")
	default:
		return []byte("{}")
	}
}

package normalize_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/simulate"
	"github.com/stackvps/stackvps/stages/normalize"
)

type deviceMap map[string]points.Device

func (d deviceMap) Lookup(_ context.Context, id string) (points.Device, error) {
	if dev, ok := d[id]; ok {
		return dev, nil
	}
	return points.Device{}, fmt.Errorf("%w %q", normalize.ErrUnknownDevice, id)
}

// fleetRecords returns what the bridge writes to telemetry.raw for messages
// messages of a simulated fleet of devices devices (the three formats), and
// the devices.
func fleetRecords(tb testing.TB, devices, messages int, start time.Time) ([]pipeline.Record, deviceMap) {
	tb.Helper()
	f, err := simulate.New(simulate.Config{Devices: devices, Rate: 1, TopicPrefix: "telemetry", Start: start})
	if err != nil {
		tb.Fatal(err)
	}
	devs := deviceMap{}
	for i, id := range f.Devices() {
		devs[id] = points.Device{ID: id, Point: simulate.PointOf(id), Provider: f.Provider(i), Active: true}
	}
	var recs []pipeline.Record
	for n := 0; len(recs) < messages; n++ {
		for i := 0; i < devices && len(recs) < messages; i++ {
			m, err := f.MessageAt(i, n, start)
			if err != nil {
				tb.Fatal(err)
			}
			levels := strings.Split(m.Topic, "/")
			provider, device := levels[len(levels)-2], levels[len(levels)-1]
			received := m.Reading.Time.Add(500 * time.Millisecond).UTC()
			recs = append(recs, pipeline.Record{
				Topic: "telemetry.raw", Partition: int32(len(recs) % 12), Offset: int64(len(recs)),
				Key: []byte(device), Value: m.Payload, Time: received,
				Headers: []pipeline.Header{
					{Key: "mqtt-topic", Value: []byte(m.Topic)},
					{Key: "received-at", Value: []byte(received.Format(time.RFC3339Nano))},
					{Key: "provider", Value: []byte(provider)},
				},
			})
		}
	}
	return recs, devs
}

func newFleetNormalizer(tb testing.TB, devs deviceMap, now time.Time) *normalize.Normalizer {
	tb.Helper()
	reg := providers.NewRegistry()
	if err := providers.RegisterBuiltin(reg); err != nil {
		tb.Fatal(err)
	}
	codec, err := schemas.NewReadingCodec(context.Background(), config.SchemaRegistry{}, "telemetry.readings")
	if err != nil {
		tb.Fatal(err)
	}
	n, err := normalize.New(config.Default().Normalize, normalize.Deps{
		Decoders: reg, Devices: devs, Encoder: codec, Registerer: prometheus.NewRegistry(),
		Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkProcess is normalize's own work per raw record (decode, device
// lookup, quality, Avro encode, metrics) over a simulated fleet of 300
// devices in the three formats, without Kafka: allocs/op is per record.
// cpu-ns/op is the CPU time of the process (garbage collection included)
// per record, which on a machine shared with other work varies much less
// than ns/op.
//
//	go test -run '^$' -bench BenchmarkProcess -benchmem -count 10 ./stages/normalize/ > new.txt && benchstat old.txt new.txt
func BenchmarkProcess(b *testing.B) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	recs, devs := fleetRecords(b, 300, 30_000, start)
	n := newFleetNormalizer(b, devs, start.Add(2*time.Hour))
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := processCPU(b)
	i := 0
	for b.Loop() {
		if _, err := n.Process(ctx, recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU is the user and system CPU time the process has used.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestProcessOutputIsStable pins the bytes normalize produces for a fixed
// stream (keys, values, times), so that work on its speed cannot change
// what it writes.
func TestProcessOutputIsStable(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	recs, devs := fleetRecords(t, 30, 600, start)
	n := newFleetNormalizer(t, devs, start.Add(2*time.Hour))
	h := sha256.New()
	outputs := 0
	for _, r := range recs {
		outs, err := n.Process(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			fmt.Fprintf(h, "%s|%q|%x|%d|%d\n", o.Topic, o.Key, o.Value, o.Time.UnixNano(), len(o.Headers))
			outputs++
		}
	}
	got := hex.EncodeToString(h.Sum(nil))
	t.Logf("%d outputs, sha256 %s", outputs, got)
	const want = "1f2436c0c25dac2f5351e6b31a1ffa992d0a1ac9015322a5b99f15240a979288"
	if got != want {
		t.Fatalf("normalize output changed: sha256 %s, want %s", got, want)
	}
}

// Process is safe for concurrent use across partitions: each device's
// records processed in order by one of several goroutines give what one
// goroutine gives, and the errors are the same.
func TestProcessConcurrentPartitions(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	recs, devs := fleetRecords(t, 60, 1200, start)
	// Some records fail: an unknown provider, an unknown device.
	for i := range recs {
		switch i % 97 {
		case 5:
			recs[i].Headers = append([]pipeline.Header(nil), recs[i].Headers...)
			recs[i].Headers[2].Value = []byte("no-such-provider")
		case 11:
			recs[i].Key = []byte("no-such-device")
		}
	}
	run := func(workers int) map[string][]string {
		n := newFleetNormalizer(t, devs, start.Add(2*time.Hour))
		parts := make([][]pipeline.Record, workers)
		for _, r := range recs {
			h := 0
			for _, c := range r.Key {
				h = h*31 + int(c)
			}
			parts[h%workers] = append(parts[h%workers], r)
		}
		results := make([]map[string][]string, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				res := map[string][]string{}
				for _, r := range parts[w] {
					outs, err := n.Process(context.Background(), r)
					if err != nil {
						res[string(r.Key)] = append(res[string(r.Key)], "error: "+pipeline.Reason(err))
						continue
					}
					for _, o := range outs {
						res[string(r.Key)] = append(res[string(r.Key)], fmt.Sprintf("%s %x %d", o.Key, o.Value, o.Time.UnixNano()))
					}
				}
				results[w] = res
			})
		}
		wg.Wait()
		all := map[string][]string{}
		for _, res := range results {
			for k, v := range res {
				all[k] = v
			}
		}
		return all
	}
	want := run(1)
	got := run(4)
	if len(got) != len(want) {
		t.Fatalf("%d devices, want %d", len(got), len(want))
	}
	for k, v := range want {
		if strings.Join(got[k], "\n") != strings.Join(v, "\n") {
			t.Fatalf("device %s: outputs differ", k)
		}
	}
	if len(want["no-such-device"]) == 0 {
		t.Fatal("the failing records did not fail")
	}
}

// TestProcessOutputsOutliveLaterCalls keeps every output of a stream, as the
// producer does until Kafka acknowledges them, while later calls go on
// cutting theirs from the same chunks: each stays what it was when
// returned, and each is sliced to its own capacity, so that an append to
// one (a caller's right) cannot write into another.
func TestProcessOutputsOutliveLaterCalls(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	recs, devs := fleetRecords(t, 30, 3000, start)
	n := newFleetNormalizer(t, devs, start.Add(2*time.Hour))
	type output struct{ key, value []byte }
	var kept []pipeline.Record
	var want []output
	for _, r := range recs {
		outs, err := n.Process(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			kept = append(kept, o)
			want = append(want, output{key: append([]byte(nil), o.Key...), value: append([]byte(nil), o.Value...)})
		}
	}
	for i := range kept {
		if cap(kept[i].Key) != len(kept[i].Key) || cap(kept[i].Value) != len(kept[i].Value) {
			t.Fatalf("output %d: key or value has room to append into its neighbour", i)
		}
	}
	for i, o := range kept {
		if !bytes.Equal(o.Key, want[i].key) || !bytes.Equal(o.Value, want[i].value) {
			t.Fatalf("output %d of %d changed after later calls", i, len(kept))
		}
	}
	if len(kept) < 2*len(recs) {
		t.Fatalf("%d outputs for %d records", len(kept), len(recs))
	}
}

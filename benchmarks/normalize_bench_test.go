package benchmarks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/benchmarks/internal/rig"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/bridge"
	"github.com/stackvps/stackvps/stages/normalize"
)

// Sizes of the normalize benchmark: normalizeRecords raw records from
// normalizeDevices devices (a third in each format), on topics of
// benchPartitions partitions (the default kafka.partitions).
const (
	normalizeRecords = 240_000
	normalizeDevices = 300
	benchPartitions  = 12
	// endPoll is how often the output topic's end offsets are polled: the
	// resolution of the measured time.
	endPoll = 10 * time.Millisecond
)

// BenchmarkNormalize measures the normalize stage against the raw limit of a
// Kafka consume -> produce hop moving the same records. 240,000 telemetry.raw
// records (the bridge's key, value and headers for simulated payloads of 300
// devices in the three formats) are produced once, untimed, into a
// 12-partition topic. Each round consumes all of them from the start with a
// fresh consumer group and is timed from its start until the output topic's
// end offsets show every output record (polled every 10ms; topic creation and
// the stage's shutdown are not timed). Every producer uses
// pipeline.ProducerOpts with the default kafka section (acks=all, idempotent,
// lz4, sticky key partitioner), as the stage does.
//
//   - path=raw_fanout: the raw limit of this hop. A bare franz-go
//     consumer-group member producing, for each record consumed, the exact
//     records normalize produces for it (key, Avro value, time; computed
//     before the rounds by the real processor), without per-poll barriers and
//     without commits: the hop's Kafka traffic (one record in, three out, the
//     same bytes) with none of its work.
//   - path=raw_relay: the same member producing each record unchanged (one
//     out per record in). The raw limit of stage_identity, and for
//     comparison with the results before 2026-11-27, when it was the
//     stage's raw limit too although the stage produces three records per
//     input.
//   - path=stage_identity: pipeline.Stage with a processor that returns its
//     record unchanged: the stage runtime's own cost (ack tracking, commits
//     pipelined behind the next polls, metrics) without normalize's work.
//     For diagnosis; paired with raw_relay.
//   - path=stage_fanout: pipeline.Stage with a processor that returns,
//     for each record, the records normalize produces for it, looked up
//     in the table raw_fanout reads: the stage runtime moving the hop's
//     traffic with none of normalize's work, so the most the stage path
//     could reach with a processor that cost nothing. For diagnosis;
//     paired with raw_fanout.
//   - path=stage_predecoded: path=stage with each provider's decoder
//     replaced by a lookup of the readings the real decoder gave for the
//     payload, computed before the rounds: the stage with everything of
//     normalize but decoding (device lookup, quality, Avro encoding,
//     metrics), so the most it could reach with a decoder that cost
//     nothing. For diagnosis; paired with raw_fanout.
//   - path=stage: pipeline.Stage running normalize.New with the built-in
//     providers, the Avro reading codec without registry and the real device
//     directory (normalize.Directory over points.Store on a migrated test
//     schema, loaded into memory before the rounds), producing one reading
//     per variable (three per record) to telemetry.readings. The hop; paired
//     with raw_fanout (ratio_to_raw) and with raw_relay (ratio_to_relay).
//
// All report records/s (input records) and cpu-us/record (CPU of the
// benchmark process: client, stage and Go runtime; not the broker's); the
// stage paths report ratio_to_raw, each round paired with a raw round run
// just before it, and raw_fanout and stage report readings/s (output
// records).
//
//	go test -run '^$' -bench '^BenchmarkNormalize$' -benchtime 1x -benchmem -count 6 -timeout 60m ./benchmarks/ | tee benchmarks/results/normalize.txt
func BenchmarkNormalize(b *testing.B) {
	ctx := context.Background()
	k := testenv.Kafka(b, benchPartitions)
	pool := testenv.Postgres(b)
	if _, err := timescale.Migrate(ctx, pool, rig.Discard); err != nil {
		b.Fatal(err)
	}
	stream, err := rig.NewStream("telemetry", normalizeDevices, normalizeRecords, time.Now().Add(-2*time.Hour).Truncate(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	store := points.NewStore(pool)
	if err := stream.Register(ctx, store); err != nil {
		b.Fatal(err)
	}
	dir := normalize.NewDirectory(store, config.Default().Normalize.DeviceRefresh.Std(), rig.Discard)
	dirCtx, stopDir := context.WithCancel(ctx)
	b.Cleanup(stopDir)
	go func() { _ = dir.Run(dirCtx) }()
	raw := rig.RawRecords(stream.Messages, k.Topics.Raw)
	perRecord, err := rig.ReadingsPerRecord(ctx, stream.DeviceMap(), raw)
	if err != nil {
		b.Fatal(err)
	}
	// outputs[key][value] are the records normalize produces for the raw
	// record (key, value): what raw_fanout produces, looked up without
	// allocating.
	outputs := map[string]map[string][]pipeline.Record{}
	var wantReadings int64
	for i, r := range raw {
		if outputs[string(r.Key)] == nil {
			outputs[string(r.Key)] = map[string][]pipeline.Record{}
		}
		outputs[string(r.Key)][string(r.Value)] = perRecord[i]
		wantReadings += int64(len(perRecord[i]))
	}
	fanoutOf := func(r *kgo.Record) []pipeline.Record { return outputs[string(r.Key)][string(r.Value)] }
	if err := rig.Produce(ctx, k, raw); err != nil {
		b.Fatal(err)
	}
	identity, fanout := k.Topics.Raw+".identity", k.Topics.Readings+".fanout"
	for _, t := range []string{identity, fanout} {
		if err := rig.EnsureTopic(ctx, k, t, benchPartitions); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = pipeline.DeleteTopics(context.Background(), k, []string{identity, fanout}) })
	adm, err := rig.Admin(k)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(adm.Close)
	for dir.Ready(ctx) != nil {
		time.Sleep(10 * time.Millisecond)
	}
	const n = normalizeRecords
	maxPoll := config.Default().Pipeline.MaxPollRecords

	// rawRound runs one raw round: a fresh group relays the n records to
	// out, producing what outputs returns for each (nil: the record).
	rawRound := func(b *testing.B, path, out string, want int64, outputs func(*kgo.Record) []pipeline.Record) time.Duration {
		base := endOffsets(b, adm, out)
		group := testenv.Name(b)
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		done := make(chan error, 1)
		var start, end time.Time
		var err error
		labelled(path, func() {
			start = time.Now()
			go func() { done <- rig.Relay(rctx, k, group, k.Topics.Raw, out, want, maxPoll, outputs) }()
			end, err = rig.WaitEndOffsets(rctx, adm, out, base+want, endPoll)
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return end.Sub(start)
	}
	relay := func(b *testing.B) time.Duration { return rawRound(b, "raw_relay", identity, n, nil) }
	fanoutRound := func(b *testing.B) time.Duration { return rawRound(b, "raw_fanout", fanout, wantReadings, fanoutOf) }

	b.Run("path=raw_fanout", func(b *testing.B) {
		rate := rawPath(b, n, "records/s", fanoutRound)
		b.ReportMetric(rate*float64(wantReadings)/n, "readings/s")
	})

	b.Run("path=raw_relay", func(b *testing.B) { rawPath(b, n, "records/s", relay) })

	// stage runs the paths that use pipeline.Stage: each round is paired
	// with a round of raw (and of also, when not nil), then runs a stage
	// built by build, with a fresh group, until out holds want more
	// records. The ratio to also's rounds is reported as alsoUnit.
	stage := func(b *testing.B, path, out string, want int64, raw, also func(*testing.B) time.Duration, alsoUnit string,
		build func(*testing.B, *prometheus.Registry) pipeline.Processor) float64 {
		var p paired
		var alsoRaw time.Duration
		var polls, acking, wall float64
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			var rawTime time.Duration
			if *pairRounds {
				rawTime = raw(b)
				if also != nil {
					alsoRaw += also(b)
				}
			}
			base := endOffsets(b, adm, out)
			dlqBase := endOffsets(b, adm, k.Topics.RawDLQ)
			reg := prometheus.NewRegistry()
			sctx, cancel := context.WithCancel(ctx)
			wctx, cancelWait := context.WithTimeout(ctx, 5*time.Minute)
			done := make(chan error, 1)
			var start, end time.Time
			var err error
			cpu := cpuTime()
			b.StartTimer()
			labelled(path, func() {
				st := newStage(b, k, reg, out, build(b, reg))
				start = time.Now()
				go func() { done <- st.Run(sctx) }()
				end, err = rig.WaitEndOffsets(wctx, adm, out, base+want, endPoll)
			})
			b.StopTimer()
			p.addCPU(cpuTime() - cpu)
			cancelWait()
			cancel()
			if rerr := <-done; rerr != nil {
				b.Fatal(rerr)
			}
			if err != nil {
				b.Fatal(err)
			}
			if d := endOffsets(b, adm, k.Topics.RawDLQ) - dlqBase; d != 0 {
				b.Fatalf("%d records dead-lettered", d)
			}
			p.add(n, end.Sub(start), rawTime)
			// How long polls were in flight: from processed to committed
			// (produce acks, then the commit). The stage polls and
			// processes the next polls meanwhile, so this overlaps the
			// processing and is not time the stage waited.
			s, c := histogram(reg, "stackvps_stage_commit_seconds")
			acking += s
			polls += float64(c)
			wall += end.Sub(start).Seconds()
			b.StartTimer()
		}
		b.Logf("%.0f polls (%.0f records each on average); a poll's acks and commit took %.0f ms on average (overlapped with the next polls), %.0f%% of the wall time in sum",
			polls, float64(p.n)/polls, 1000*acking/polls, 100*acking/wall)
		rate := p.report(b, "records/s")
		if alsoRaw > 0 {
			b.ReportMetric(alsoRaw.Seconds()/p.path.Seconds(), alsoUnit)
		}
		return rate
	}

	b.Run("path=stage_identity", func(b *testing.B) {
		stage(b, "stage_identity", identity, n, relay, nil, "", func(*testing.B, *prometheus.Registry) pipeline.Processor {
			return pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
				return []pipeline.Record{{Key: r.Key, Value: r.Value, Headers: r.Headers, Time: r.Time}}, nil
			})
		})
	})

	b.Run("path=stage_fanout", func(b *testing.B) {
		stage(b, "stage_fanout", fanout, wantReadings, fanoutRound, nil, "", func(*testing.B, *prometheus.Registry) pipeline.Processor {
			return pipeline.ProcessorFunc(func(_ context.Context, r pipeline.Record) ([]pipeline.Record, error) {
				return outputs[string(r.Key)][string(r.Value)], nil
			})
		})
	})

	b.Run("path=stage_predecoded", func(b *testing.B) {
		decoders := predecodedDecoders(ctx, b, raw)
		stage(b, "stage_predecoded", k.Topics.Readings, wantReadings, fanoutRound, nil, "", func(b *testing.B, reg *prometheus.Registry) pipeline.Processor {
			return newNormalizer(b, reg, dir, decoders)
		})
	})

	b.Run("path=stage", func(b *testing.B) {
		rate := stage(b, "stage", k.Topics.Readings, wantReadings, fanoutRound, relay, "ratio_to_relay", func(b *testing.B, reg *prometheus.Registry) pipeline.Processor {
			return newNormalizer(b, reg, dir, nil)
		})
		b.ReportMetric(rate*float64(wantReadings)/n, "readings/s")
	})
}

// newNormalizer builds the processor as `stackvps run --stages normalize`
// does, its metrics on reg, with decoders (nil: the built-in providers).
func newNormalizer(b *testing.B, reg prometheus.Registerer, devs normalize.Devices, decoders *providers.Registry) *normalize.Normalizer {
	b.Helper()
	if decoders == nil {
		decoders = builtinDecoders(b)
	}
	codec, err := rig.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	proc, err := normalize.New(config.Default().Normalize, normalize.Deps{
		Decoders: decoders, Devices: devs, Encoder: codec, Registerer: reg, Log: rig.Discard,
	})
	if err != nil {
		b.Fatal(err)
	}
	return proc
}

// newStage builds a stage reading telemetry.raw with a fresh consumer group,
// its metrics on reg.
func newStage(b *testing.B, k config.Kafka, reg prometheus.Registerer, out string, proc pipeline.Processor) *pipeline.Stage {
	b.Helper()
	met, err := pipeline.NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	pcfg := config.Default().Pipeline
	pcfg.GroupPrefix = testenv.Name(b)
	st, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "normalize", Inputs: []string{k.Topics.Raw}, Output: out, DLQ: k.Topics.RawDLQ, Processor: proc,
	}, pipeline.Deps{Kafka: k, Pipeline: pcfg, Metrics: met, Health: pipeline.NewHealth(3 * time.Second), Log: rig.Discard})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// endOffsets returns the records topic holds.
func endOffsets(b *testing.B, adm *kadm.Client, topic string) int64 {
	b.Helper()
	n, err := rig.EndOffsets(context.Background(), adm, topic)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// builtinDecoders is rig.BuiltinDecoders, failing b on error.
func builtinDecoders(b *testing.B) *providers.Registry {
	b.Helper()
	decoders, err := rig.BuiltinDecoders()
	if err != nil {
		b.Fatal(err)
	}
	return decoders
}

// predecodedDecoders returns a registry in which each built-in provider's
// name looks up, by payload, the readings its decoder gives for the
// payloads of raw.
func predecodedDecoders(ctx context.Context, b *testing.B, raw []pipeline.Record) *providers.Registry {
	b.Helper()
	builtin := builtinDecoders(b)
	table := predecoded{}
	for _, r := range raw {
		provider, _ := r.Header(bridge.HeaderProvider)
		topic, _ := r.Header(bridge.HeaderMQTTTopic)
		dec, err := builtin.Lookup(string(provider))
		if err != nil {
			b.Fatal(err)
		}
		readings, err := dec.Decode(ctx, providers.Payload{
			Provider: string(provider), Device: string(r.Key), Topic: string(topic),
			Bytes: r.Value, ReceivedAt: r.Time,
		})
		if err != nil {
			b.Fatal(err)
		}
		table[string(r.Value)] = readings
	}
	decoders := providers.NewRegistry()
	for _, name := range builtin.Names() {
		if err := decoders.Register(name, table); err != nil {
			b.Fatal(err)
		}
	}
	return decoders
}

// predecoded is a providers.AppendDecoder that returns the readings it
// holds for a payload.
type predecoded map[string][]providers.Reading

func (d predecoded) Decode(ctx context.Context, p providers.Payload) ([]providers.Reading, error) {
	return d.AppendDecode(ctx, nil, p)
}

func (d predecoded) AppendDecode(_ context.Context, dst []providers.Reading, p providers.Payload) ([]providers.Reading, error) {
	readings, ok := d[string(p.Bytes)]
	if !ok {
		return nil, fmt.Errorf("%w: a payload that was not decoded before the rounds", providers.ErrBadPayload)
	}
	return append(dst, readings...), nil
}

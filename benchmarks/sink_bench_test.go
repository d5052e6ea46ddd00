package benchmarks_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/benchmarks/internal/rig"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// sinkBatch is the sink's default batch (sink.batch_size).
const sinkBatch = 10_000

// BenchmarkSink measures the sink's writer against the raw limit of the
// database: the same 10,000 rows (what the real normalize processor makes of
// simulated payloads in the three formats: 100 devices, flow, totalizer and
// level) written into the readings table of a freshly migrated test schema
// (primary key (point, variable, time), index on time; monthly partitions on
// plain PostgreSQL), emptied with TRUNCATE, untimed, before each write.
//
//   - path=raw_copy: pgx CopyFrom of the decoded rows on one connection in
//     its own implicit transaction, nothing else. The raw limit.
//   - path=writer: timescale.Writer.Write of the Avro records: decode,
//     de-duplicate, one transaction with the COPY under a savepoint and the
//     offsets of 12 partitions upserted into sink_offsets. What the sink does
//     per batch.
//   - path=writer_predecoded: as path=writer with a RowDecoder that returns
//     the rows already decoded: the writer's database work alone, without
//     Avro decoding. For diagnosis.
//   - path=writer_replay: the same batch written again over the stored rows
//     (stored untimed just before): the COPY fails on the primary key and the
//     batch is merged (staging table, INSERT ... ON CONFLICT DO NOTHING).
//     What replaying a batch after a crash costs.
//
// Each reports rows/s and cpu-us/row (CPU of the benchmark process, the
// client side; PostgreSQL's is not in it); the writer paths also report
// ratio_to_raw, each write paired with a raw COPY of the same rows run just
// before it.
//
//	go test -run '^$' -bench '^BenchmarkSink$' -benchtime 3s -benchmem -count 6 -timeout 60m ./benchmarks/ | tee benchmarks/results/sink.txt
func BenchmarkSink(b *testing.B) {
	ctx := context.Background()
	pool := testenv.Postgres(b)
	if _, err := timescale.Migrate(ctx, pool, rig.Discard); err != nil {
		b.Fatal(err)
	}
	recs, rows := sinkData(b)
	if err := rig.EnsurePartitions(ctx, pool, rows); err != nil {
		b.Fatal(err)
	}
	codec, err := rig.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	w, err := timescale.NewWriter(ctx, pool, rig.RowDecoder(codec), prometheus.NewRegistry(), rig.Discard)
	if err != nil {
		b.Fatal(err)
	}
	// copyRows is one raw round; pairedCopy runs it, on an empty table, as
	// the pair of a writer round.
	copyRows := func(b *testing.B) time.Duration {
		d, err := timed(func() error {
			n, err := rig.CopyRows(ctx, pool, rows)
			if err == nil && n != sinkBatch {
				err = fmt.Errorf("copied %d rows, want %d", n, sinkBatch)
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	pairedCopy := func(b *testing.B) time.Duration {
		if !*pairRounds {
			return 0
		}
		truncate(b, pool)
		return copyRows(b)
	}
	// The predecoded writer's records carry the index of their row.
	wPre, err := timescale.NewWriter(ctx, pool, func(v []byte) (timescale.Row, error) {
		return rows[binary.BigEndian.Uint32(v)], nil
	}, prometheus.NewRegistry(), rig.Discard)
	if err != nil {
		b.Fatal(err)
	}
	indexed := make([]pipeline.Record, len(recs))
	for i, r := range recs {
		r.Value = binary.BigEndian.AppendUint32(nil, uint32(i))
		indexed[i] = r
	}
	round := int64(0)
	writeWith := func(b *testing.B, w *timescale.Writer, recs []pipeline.Record) time.Duration {
		round++
		d, err := timed(func() error { return w.Write(ctx, "bench-sink", recs, nextOffsets(round), deadLetterFails) })
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	write := func(b *testing.B) time.Duration { return writeWith(b, w, recs) }

	b.Run("path=raw_copy", func(b *testing.B) {
		var p paired
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			truncate(b, pool)
			b.StartTimer()
			var d time.Duration
			cpu := cpuTime()
			labelled("raw_copy", func() { d = copyRows(b) })
			p.addCPU(cpuTime() - cpu)
			p.add(sinkBatch, d, 0)
		}
		p.report(b, "rows/s")
		checkRows(b, pool, sinkBatch)
	})

	b.Run("path=writer", func(b *testing.B) {
		var p paired
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			raw := pairedCopy(b)
			truncate(b, pool)
			b.StartTimer()
			var d time.Duration
			cpu := cpuTime()
			labelled("writer", func() { d = write(b) })
			p.addCPU(cpuTime() - cpu)
			p.add(sinkBatch, d, raw)
		}
		p.report(b, "rows/s")
		checkRows(b, pool, sinkBatch)
	})

	b.Run("path=writer_predecoded", func(b *testing.B) {
		var p paired
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			raw := pairedCopy(b)
			truncate(b, pool)
			b.StartTimer()
			var d time.Duration
			cpu := cpuTime()
			labelled("writer_predecoded", func() { d = writeWith(b, wPre, indexed) })
			p.addCPU(cpuTime() - cpu)
			p.add(sinkBatch, d, raw)
		}
		p.report(b, "rows/s")
		checkRows(b, pool, sinkBatch)
	})

	b.Run("path=writer_replay", func(b *testing.B) {
		var p paired
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			raw := pairedCopy(b)
			truncate(b, pool)
			write(b)
			b.StartTimer()
			var d time.Duration
			cpu := cpuTime()
			labelled("writer_replay", func() { d = write(b) })
			p.addCPU(cpuTime() - cpu)
			p.add(sinkBatch, d, raw)
		}
		p.report(b, "rows/s")
		checkRows(b, pool, sinkBatch)
	})
}

// sinkData returns one batch of telemetry.readings records and the rows they
// decode to.
func sinkData(b *testing.B) ([]pipeline.Record, []timescale.Row) {
	b.Helper()
	const devices = 100
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Hour)
	s, err := rig.NewStream("telemetry", devices, (sinkBatch+2)/3, start)
	if err != nil {
		b.Fatal(err)
	}
	recs, err := rig.Readings(context.Background(), s.DeviceMap(), rig.RawRecords(s.Messages, "telemetry.raw"))
	if err != nil {
		b.Fatal(err)
	}
	recs = recs[:sinkBatch]
	rows, err := rig.Rows(recs)
	if err != nil {
		b.Fatal(err)
	}
	return recs, rows
}

func truncate(b *testing.B, pool *pgxpool.Pool) {
	b.Helper()
	if err := rig.Truncate(context.Background(), pool); err != nil {
		b.Fatal(err)
	}
}

// checkRows fails unless readings holds exactly want rows.
func checkRows(b *testing.B, pool *pgxpool.Pool, want int) {
	b.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM readings`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	if n != want {
		b.Fatalf("readings holds %d rows, want %d", n, want)
	}
}

// nextOffsets are the offsets stored with batch round: 12 partitions (the
// default kafka.partitions), each moving forward every round.
func nextOffsets(round int64) map[string]map[int32]int64 {
	parts := map[int32]int64{}
	for p := range int32(12) {
		parts[p] = round * sinkBatch / 12
	}
	return map[string]map[int32]int64{"telemetry.readings": parts}
}

func deadLetterFails(_ context.Context, rec pipeline.Record, err error) error {
	return errors.Join(fmt.Errorf("benchmark data must not be dead-lettered (offset %d)", rec.Offset), err)
}

package schemas_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/schemas"
)

// benchFramings are the two wire forms; "confluent" registers with the
// stand-in registry once, outside the timed loop, and then never touches the
// network.
func benchFramings(b *testing.B) []struct {
	name string
	reg  config.SchemaRegistry
} {
	return []struct {
		name string
		reg  config.SchemaRegistry
	}{
		{"framing=none", noRegistry},
		{"framing=confluent", newStandInRegistry(b).config()},
	}
}

// BenchmarkReadingEncode measures the hot path of the normalize stage.
//
//	go test ./schemas -run '^$' -bench . -benchmem -count 6 > new.txt && benchstat old.txt new.txt
func BenchmarkReadingEncode(b *testing.B) {
	for _, fr := range benchFramings(b) {
		c := readingCodec(b, fr.reg)
		r := fullReading()
		b.Run(fr.name+"/api=Encode", func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				out, err := c.Encode(&r)
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			b.SetBytes(int64(n))
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
		b.Run(fr.name+"/api=AppendEncode", func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 1024)
			for b.Loop() {
				out, err := c.AppendEncode(buf[:0], &r)
				if err != nil {
					b.Fatal(err)
				}
				buf = out
			}
			b.SetBytes(int64(len(buf)))
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkReadingDecode measures decoding one Reading, as the sink and the
// aggregate stage do for every record.
//
//	go test ./schemas -run '^$' -bench . -benchmem -count 6 > new.txt && benchstat old.txt new.txt
func BenchmarkReadingDecode(b *testing.B) {
	for _, fr := range benchFramings(b) {
		c := readingCodec(b, fr.reg)
		r := fullReading()
		enc, err := c.Encode(&r)
		require.NoError(b, err)
		b.Run(fr.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			var got schemas.Reading
			for b.Loop() {
				if err := c.Decode(enc, &got); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkReadingParallel measures Encode and Decode from all Ps at once,
// as a stage with several partitions runs them.
//
//	go test ./schemas -run '^$' -bench Parallel -benchmem -count 6
func BenchmarkReadingParallel(b *testing.B) {
	for _, fr := range benchFramings(b) {
		c := readingCodec(b, fr.reg)
		b.Run(fr.name+"/op=encode", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := fullReading()
				buf := make([]byte, 0, 1024)
				for pb.Next() {
					var err error
					if buf, err = c.AppendEncode(buf[:0], &r); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run(fr.name+"/op=decode", func(b *testing.B) {
			r := fullReading()
			enc, err := c.Encode(&r)
			require.NoError(b, err)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var got schemas.Reading
				for pb.Next() {
					if err := c.Decode(enc, &got); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

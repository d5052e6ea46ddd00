package benchmarks_test

import (
	"context"
	"flag"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// unitRatio is the metric of a path's rate divided by the raw limit's rate.
// Every round of a path is paired with a round of its raw limit run just
// before it, untimed, on the same data: the ratio compares measurements
// taken seconds apart on the same machine, so load from other processes
// drifts both alike.
const unitRatio = "ratio_to_raw"

// pairRounds runs the paired raw rounds. Turn it off (go test ... -args
// -paired=false) for a CPU profile that holds only the path: ratio_to_raw
// is then not reported.
var pairRounds = flag.Bool("paired", true, "pair every round of a path with a round of its raw limit (ratio_to_raw)")

// paired accumulates what a path processed, the time it took (as measured by
// the benchmark's own clock, which stops when the work is observed done) and
// the time its paired raw rounds took for the same amount of work.
type paired struct {
	n         int64
	path, raw time.Duration
	cpu       time.Duration
}

// add records one round: n units in path, the paired raw round in raw.
func (p *paired) add(n int64, path, raw time.Duration) {
	p.n += n
	p.path += path
	p.raw += raw
}

// addCPU records CPU time the benchmark process spent on the path's rounds.
func (p *paired) addCPU(d time.Duration) { p.cpu += d }

// rawPath runs the rounds of a raw limit: each round moves n units in the
// time round returns, measured with the process's CPU. It reports the rate
// in unit per second and returns it.
func rawPath(b *testing.B, n int64, unit string, round func(*testing.B) time.Duration) float64 {
	b.Helper()
	var p paired
	b.ReportAllocs()
	for b.Loop() {
		cpu := cpuTime()
		p.add(n, round(b), 0)
		p.addCPU(cpuTime() - cpu)
	}
	return p.report(b, unit)
}

// report sets the rate metric (unit, per second) and ratio_to_raw. A raw
// path reports no ratio (raw is zero).
func (p *paired) report(b *testing.B, unit string) float64 {
	b.Helper()
	if p.path <= 0 {
		b.Fatal("nothing measured")
	}
	rate := float64(p.n) / p.path.Seconds()
	b.ReportMetric(rate, unit)
	if p.cpu > 0 {
		// CPU of this process only (not of Kafka, Mosquitto or PostgreSQL).
		b.ReportMetric(float64(p.cpu.Microseconds())/float64(p.n), "cpu-us/"+singular(unit))
	}
	if p.raw > 0 {
		b.ReportMetric(p.raw.Seconds()/p.path.Seconds(), unitRatio)
	}
	return rate
}

// labelled runs f with the pprof label path=<path>, which goroutines started
// by f inherit (a stage's partition workers, a Kafka client's connections),
// so `go tool pprof -tagfocus path=stage` shows one path without the setup.
func labelled(path string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("path", path), func(context.Context) { f() })
}

// timed runs f and returns how long it took.
func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

// singular turns "rows/s" into "row".
func singular(unit string) string {
	for i := range unit {
		if unit[i] == 's' && i+1 < len(unit) && unit[i+1] == '/' {
			return unit[:i]
		}
	}
	return unit
}

// cpuTime returns the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// histogram returns the sum and count of the samples of histogram name.
func histogram(g prometheus.Gatherer, name string) (sum float64, count uint64) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
			count += m.GetHistogram().GetSampleCount()
		}
	}
	return sum, count
}

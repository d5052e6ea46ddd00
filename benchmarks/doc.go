// Package benchmarks holds Stack VPS's end-to-end benchmarks: each hop of the
// ingest spine (MQTT -> bridge -> telemetry.raw -> normalize ->
// telemetry.readings -> sink -> readings) measured against the raw limit of
// the same machine, with the same data, in the same run. The benchmarks are
// in *_test.go files and run only with -bench (see README.md and
// benchmarks/run); `go test ./...` runs nothing here. The whole-pipeline
// benchmark (maximum rate, latency at half load, peak RSS) is the program in
// benchmarks/e2e.
package benchmarks

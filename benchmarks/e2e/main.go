// Command e2e is the whole-pipeline benchmark of Stack VPS. It builds the
// stackvps binary, runs the bridge, normalize and sink stages as three
// `stackvps run --stages X` processes (each with its own /metrics) against
// the real services named by STACKVPS_TEST_DATABASE_URL,
// STACKVPS_TEST_KAFKA_BROKERS and STACKVPS_TEST_MQTT_URL, in a schema,
// topics, MQTT topic prefix, consumer groups and client ids of its own, and
// measures:
//
//  1. the raw limits of the same machine in the same run, with the stages
//     idle: a bare QoS 1 subscriber receiving the maximum-rate stream, and
//     a bare pgx COPY of the rows that stream becomes;
//  2. the maximum rate: a fixed stream of simulated messages (three formats)
//     published at QoS 1 as fast as Mosquitto takes them, timed from the
//     first publish until the sink has stored every row;
//  3. the latency at half that rate, for a fixed duration: every payload's
//     event time is the moment it is published, and a row's latency is the
//     moment it became visible in PostgreSQL minus its event time (see
//     measureLatency for the method and its resolution);
//  4. the peak RSS (VmHWM) and the CPU time of each stage process.
//
// It writes a plain-text report (benchmarks/results/e2e.txt by default). It
// skips, saying which variable to set, when a service is not configured,
// unless STACKVPS_TEST_REQUIRE=1.
//
//	go run ./benchmarks/e2e -out benchmarks/results/e2e.txt
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/benchmarks/internal/rig"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/simulate"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// options are the command-line flags.
type options struct {
	out          string
	binary       string
	devices      int
	maxMessages  int
	halfDuration time.Duration
	fraction     float64
	rate         float64
	poll         time.Duration
	partitions   int
	copyBatch    int
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "benchmarks/results/e2e.txt", "report file (- for stdout)")
	flag.StringVar(&o.binary, "binary", "", "stackvps binary to run (default: build ./cmd/stackvps)")
	flag.IntVar(&o.devices, "devices", 600, "simulated devices (a third in each format)")
	flag.IntVar(&o.maxMessages, "max-messages", 60_000, "messages of the maximum-rate phase (keep below Mosquitto's max_queued_messages, 100,000)")
	flag.DurationVar(&o.halfDuration, "half-duration", 45*time.Second, "how long to publish at half the maximum rate")
	flag.Float64Var(&o.fraction, "fraction", 0.5, "the latency phase's rate as a fraction of the maximum rate")
	flag.Float64Var(&o.rate, "rate", 0, "the latency phase's rate in messages/s, instead of -fraction of the maximum rate (to compare two builds at the same load)")
	flag.DurationVar(&o.poll, "poll", 20*time.Millisecond, "how often sink_offsets is polled: the resolution of latencies and times")
	flag.IntVar(&o.partitions, "partitions", config.Default().Kafka.Partitions, "partitions of the topics")
	flag.IntVar(&o.copyBatch, "copy-batch", config.Default().Sink.BatchSize, "rows per COPY of the raw limit (sink.batch_size)")
	flag.Parse()

	env := map[string]string{}
	for _, name := range []string{testenv.EnvDatabaseURL, testenv.EnvKafkaBrokers, testenv.EnvMQTTURL} {
		v := os.Getenv(name)
		if v == "" {
			msg := fmt.Sprintf("set %s to run (make services; . .local/env)", name)
			if os.Getenv(testenv.EnvRequire) == "1" {
				fmt.Fprintln(os.Stderr, "e2e:", msg)
				os.Exit(1)
			}
			fmt.Println("e2e: SKIP:", msg)
			return
		}
		env[name] = v
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	if o.out == "-" {
		fmt.Print(rep)
		return
	}
	if err := os.WriteFile(o.out, []byte(rep), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	fmt.Print(rep)
	fmt.Println("e2e: report written to", o.out)
}

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// deployment is one isolated Stack VPS.
type deployment struct {
	o      options
	name   string // schema, client ids, groups
	prefix string // MQTT topics
	dir    string
	root   string // module root: the local services run from root/.local
	binary string
	schema *rig.Schema
	pool   *pgxpool.Pool
	kafka  config.Kafka
	mqtt   config.MQTT
	adm    *kadm.Client
	env    []string
	procs  map[string]*process
}

func run(ctx context.Context, o options, env map[string]string) (string, error) {
	d := &deployment{o: o, procs: map[string]*process{}}
	var b [4]byte
	_, _ = rand.Read(b[:])
	d.name = "bench_e2e_" + hex.EncodeToString(b[:])
	d.prefix = strings.ReplaceAll(d.name, "_", "-")
	var err error
	if d.dir, err = os.MkdirTemp("", "stackvps-e2e-bench"); err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(d.dir) }()
	cleanup, err := d.setUp(ctx, o, env)
	defer cleanup()
	if err != nil {
		return "", err
	}
	r := &report{o: o, started: time.Now(), loadBefore: loadavg()}
	if err := d.measure(ctx, r); err != nil {
		return "", err
	}
	r.loadAfter = loadavg()
	return r.String(), nil
}

// setUp builds the binary, creates the schema and topics, migrates,
// registers the fleet's devices and starts the three stage processes. The
// returned function undoes it; it must be called even on error.
func (d *deployment) setUp(ctx context.Context, o options, env map[string]string) (func(), error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	d.binary = o.binary
	root, err := moduleRoot()
	if err != nil {
		return cleanup, err
	}
	d.root = root
	if d.binary == "" {
		d.binary = filepath.Join(d.dir, "stackvps")
		logf("building %s", d.binary)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", d.binary, "./cmd/stackvps")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return cleanup, fmt.Errorf("building stackvps: %w\n%s", err, out)
		}
	}
	if d.schema, err = rig.CreateSchema(ctx, env[testenv.EnvDatabaseURL], d.name); err != nil {
		return cleanup, err
	}
	undo = append(undo, func() {
		if err := d.schema.Drop(context.Background()); err != nil {
			logf("dropping schema %s: %v", d.name, err)
		}
	})
	k := config.Default().Kafka
	k.Brokers = strings.Split(env[testenv.EnvKafkaBrokers], ",")
	k.ClientID = d.name
	k.Partitions = o.partitions
	p := d.prefix + "."
	t := &k.Topics
	t.Raw, t.RawDLQ, t.Readings = p+t.Raw, p+t.RawDLQ, p+t.Readings
	t.ReadingsDLQ, t.ComplianceRecords, t.Notifications = p+t.ReadingsDLQ, p+t.ComplianceRecords, p+t.Notifications
	d.kafka = k
	if _, err := pipeline.EnsureTopics(ctx, k, pipeline.ContractTopics(k)); err != nil {
		return cleanup, err
	}
	undo = append(undo, func() {
		if err := pipeline.DeleteTopics(context.Background(), k, k.Topics.All()); err != nil {
			logf("deleting topics: %v", err)
		}
	})
	if d.adm, err = rig.Admin(k); err != nil {
		return cleanup, err
	}
	undo = append(undo, d.adm.Close)
	d.mqtt = config.Default().MQTT
	d.mqtt.Broker = env[testenv.EnvMQTTURL]
	d.mqtt.ClientID = d.prefix
	d.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URL=" + d.schema.URL,
		"KAFKA_BROKERS=" + strings.Join(k.Brokers, ","),
		"MQTT_BROKER=" + d.mqtt.Broker,
		"STACKVPS_LOG_FORMAT=json",
		"STACKVPS_KAFKA_CLIENT_ID=" + d.name,
		"STACKVPS_KAFKA_TOPICS_RAW=" + t.Raw,
		"STACKVPS_KAFKA_TOPICS_RAW_DLQ=" + t.RawDLQ,
		"STACKVPS_KAFKA_TOPICS_READINGS=" + t.Readings,
		"STACKVPS_KAFKA_TOPICS_READINGS_DLQ=" + t.ReadingsDLQ,
		"STACKVPS_KAFKA_TOPICS_COMPLIANCE_RECORDS=" + t.ComplianceRecords,
		"STACKVPS_KAFKA_TOPICS_NOTIFICATIONS=" + t.Notifications,
		"STACKVPS_PIPELINE_GROUP_PREFIX=" + d.name,
		"STACKVPS_MQTT_CLIENT_ID=" + d.prefix,
		"STACKVPS_MQTT_SESSION_EXPIRY=10m",
		"STACKVPS_BRIDGE_SUBSCRIPTIONS=" + d.prefix + "/+/+",
		"STACKVPS_BRIDGE_SHARE_GROUP=" + d.prefix,
		"STACKVPS_BRIDGE_TOPIC_PATTERN=" + d.prefix + "/{provider}/{device}",
	}
	cmd := exec.CommandContext(ctx, d.binary, "migrate", "--skip-topics")
	cmd.Env = d.env
	if out, err := cmd.CombinedOutput(); err != nil {
		return cleanup, fmt.Errorf("stackvps migrate: %w\n%s", err, out)
	}
	if d.pool, err = pgxpool.New(ctx, d.schema.URL); err != nil {
		return cleanup, err
	}
	undo = append(undo, d.pool.Close)
	undo = append(undo, func() { rig.DropSession(d.mqtt, d.prefix) })
	for _, stage := range []string{"bridge", "normalize", "sink"} {
		p, err := d.start(ctx, stage)
		if err != nil {
			return cleanup, err
		}
		d.procs[stage] = p
		undo = append(undo, func() { p.stop() })
	}
	return cleanup, nil
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the stackvps module")
	}
	return filepath.Dir(mod), nil
}

// process is one running `stackvps run --stages X`.
type process struct {
	stage string
	cmd   *exec.Cmd
	log   string
	http  string
	done  chan error
}

func (d *deployment) start(ctx context.Context, stage string) (*process, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	logPath := filepath.Join(d.dir, stage+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.binary, "run", "--stages", stage)
	cmd.Env = append(append([]string(nil), d.env...), "STACKVPS_HTTP_LISTEN="+addr)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &process{stage: stage, cmd: cmd, log: logPath, http: addr, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); _ = f.Close() }()
	deadline := time.Now().Add(60 * time.Second)
	for !httpOK(ctx, "http://"+addr+"/readyz") {
		select {
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("stackvps run --stages %s exited: %v\n%s", stage, err, tail(logPath))
		default:
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("stackvps run --stages %s not ready after 60s\n%s", stage, tail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
	logf("stage %s ready (pid %d, http %s)", stage, cmd.Process.Pid, addr)
	return p, nil
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 30s).
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		p.done <- <-p.done
	}
}

// usage is what /proc says of a process.
type usage struct {
	cpu      time.Duration // user + system
	hwm, rss int64         // bytes
}

func (p *process) usage() (usage, error) {
	pid := p.cmd.Process.Pid
	var u usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	u.cpu = time.Duration(utime+stime) * time.Second / ticks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmHWM":
			u.hwm = kb << 10
		case "VmRSS":
			u.rss = kb << 10
		}
	}
	return u, nil
}

// metrics scrapes the process's /metrics and returns every series summed
// over its labels, by name (histograms as name_sum and name_count), and the
// series of each rollup also as name/<rollup> (name/1d).
func (p *process) metrics(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.http+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		out[name] += v
		if i := strings.Index(line, `rollup="`); i >= 0 {
			r := line[i+len(`rollup="`):]
			out[name+"/"+r[:strings.IndexByte(r, '"')]] += v
		}
	}
	return out, nil
}

// scrape returns every stage's metrics.
func (d *deployment) scrape(ctx context.Context) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for s, p := range d.procs {
		m, err := p.metrics(ctx)
		if err != nil {
			logf("scraping %s: %v", s, err)
		}
		out[s] = m
	}
	return out
}

// machineCPU returns the busy and total CPU time of the whole machine
// (every process, other tenants included), from /proc/stat.
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)[1:]
	const tick = time.Second / 100 // USER_HZ
	for i, v := range f {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += time.Duration(n) * tick
		if i != 3 && i != 4 { // idle, iowait
			busy += time.Duration(n) * tick
		}
	}
	return busy, total
}

// serviceCPU returns the CPU time used so far by the local services of the
// checkout at root (processes whose command line names root+"/.local/", and
// their children: PostgreSQL's backends, those of other clients included),
// by kind (kafka, mosquitto, postgres), and by this program.
func serviceCPU(root string) map[string]time.Duration {
	out := map[string]time.Duration{}
	type proc struct {
		ppid      int
		comm      string
		mine      bool
		cpu, kids time.Duration
	}
	procs := map[int]*proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < 0 {
			continue
		}
		f := strings.Fields(string(stat[end+2:]))
		if len(f) < 15 {
			continue
		}
		n := func(i int) time.Duration {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			return time.Duration(v) * time.Second / 100
		}
		ppid, _ := strconv.Atoi(f[1])
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		procs[pid] = &proc{ppid: ppid, comm: string(stat[open+1 : end]), cpu: n(11) + n(12), kids: n(13) + n(14),
			mine: strings.Contains(string(cmdline), root+"/.local/")}
	}
	for _, p := range procs {
		owner := p
		if !owner.mine {
			if parent, ok := procs[p.ppid]; ok && parent.mine {
				owner = parent
			} else {
				continue
			}
		}
		kind := owner.comm
		if kind == "java" {
			kind = "kafka"
		}
		out[kind] += p.cpu
		if p == owner && kind == "postgres" {
			out[kind] += p.kids // backends that exited
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["load generator"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// cpuBreakdown formats where the machine's CPU went between two readings.
func cpuBreakdown(stages map[string]float64, s0, s1 map[string]time.Duration, busy float64, elapsed time.Duration) string {
	var b strings.Builder
	sum := 0.0
	for _, s := range []string{"bridge", "normalize", "sink"} {
		sum += stages[s]
	}
	fmt.Fprintf(&b, "stages %.2f", sum)
	for _, k := range []string{"kafka", "mosquitto", "postgres", "load generator"} {
		c := (s1[k] - s0[k]).Seconds() / elapsed.Seconds()
		sum += c
		fmt.Fprintf(&b, ", %s %.2f", k, c)
	}
	total := busy * float64(runtime.NumCPU())
	fmt.Fprintf(&b, "; other processes %.2f (of %.2f busy)", max(0, total-sum), total)
	return b.String()
}

// busyShare returns the share of the machine's CPU that was busy between
// two machineCPU readings.
func busyShare(b0, t0, b1, t1 time.Duration) float64 {
	if t1 <= t0 {
		return 0
	}
	return float64(b1-b0) / float64(t1-t0)
}

// usages returns every stage's usage.
func (d *deployment) usages() map[string]usage {
	out := map[string]usage{}
	for s, p := range d.procs {
		u, err := p.usage()
		if err != nil {
			logf("reading /proc of %s: %v", s, err)
		}
		out[s] = u
	}
	return out
}

func (d *deployment) measure(ctx context.Context, r *report) error {
	o := d.o
	// One stream: reading 0 of every device warms the pipeline up, the
	// next maxMessages are the maximum-rate phase; the half-load phase
	// continues the readings with event time = publish time.
	start := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	stream, err := rig.NewStream(d.prefix, o.devices, o.devices+o.maxMessages, start)
	if err != nil {
		return err
	}
	if err := stream.Register(ctx, points.NewStore(d.pool)); err != nil {
		return err
	}
	warm, maxMsgs := stream.Messages[:o.devices], stream.Messages[o.devices:]
	pub, err := rig.NewPublisher(ctx, d.mqtt, d.prefix+"-pub")
	if err != nil {
		return err
	}
	defer pub.Close()

	logf("waiting for the bridge to subscribe")
	if err := d.awaitBridge(ctx, pub); err != nil {
		return err
	}
	logf("warming up: %d messages", len(warm))
	if err := pub.PublishAll(ctx, warm, rig.Inflight); err != nil {
		return err
	}
	if _, err := d.waitStored(ctx, int64(3*len(warm)), nil); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	// Raw limits, with the stages idle.
	logf("raw limit: MQTT delivery of %d messages to a bare subscriber", len(maxMsgs))
	rawPrefix := d.prefix + "-raw"
	rawDur, err := rig.MQTTDelivery(ctx, d.mqtt, rawPrefix, "$share/"+rawPrefix+"/"+rawPrefix+"/+/+",
		uint16(config.Default().Bridge.ReceiveMaximum), stream.WithPrefix(rawPrefix)[o.devices:])
	if err != nil {
		return fmt.Errorf("raw MQTT delivery: %w", err)
	}
	r.rawMQTT = float64(len(maxMsgs)) / rawDur.Seconds()
	recs, err := rig.Readings(ctx, stream.DeviceMap(), rig.RawRecords(maxMsgs, d.kafka.Topics.Raw))
	if err != nil {
		return err
	}
	rows, err := rig.Rows(recs)
	if err != nil {
		return err
	}
	logf("raw limit: COPY of %d rows in batches of %d", len(rows), o.copyBatch)
	if r.rawCopy, err = d.rawCopy(ctx, rows); err != nil {
		return fmt.Errorf("raw COPY: %w", err)
	}

	// Maximum rate.
	logf("maximum rate: %d messages (%d rows)", len(maxMsgs), len(rows))
	u0, m0 := d.usages(), d.scrape(ctx)
	mb0, mt0 := machineCPU()
	sc0 := serviceCPU(d.root)
	base, err := d.storedRecords(ctx)
	if err != nil {
		return err
	}
	var samples []sample
	t0 := time.Now()
	pubErr := make(chan error, 1)
	var pubDone time.Time
	go func() {
		err := pub.PublishAll(ctx, maxMsgs, rig.Inflight)
		pubDone = time.Now()
		pubErr <- err
	}()
	t1, err := d.waitStored(ctx, base+int64(len(rows)), &samples)
	if err != nil {
		return fmt.Errorf("maximum rate: %w", err)
	}
	if err := <-pubErr; err != nil {
		return err
	}
	u1 := d.usages()
	mb1, mt1 := machineCPU()
	r.maxBusy = busyShare(mb0, mt0, mb1, mt1)
	r.maxCPUSplit = cpuBreakdown(cpuShares(u0, u1, t1.Sub(t0)), sc0, serviceCPU(d.root), r.maxBusy, t1.Sub(t0))
	r.maxStages = stageStats(m0, d.scrape(ctx), false)
	r.maxMessages, r.maxRows = len(maxMsgs), len(rows)
	r.maxElapsed, r.maxPublish = t1.Sub(t0), pubDone.Sub(t0)
	r.maxSteady = steadyRate(samples, base, int64(len(rows)))
	r.maxCPU = cpuShares(u0, u1, r.maxElapsed)
	want := int64(3*len(warm) + len(rows))
	if n, err := d.countRows(ctx); err != nil || n != want {
		return fmt.Errorf("readings holds %d rows after the maximum-rate phase, want %d (%v)", n, want, err)
	}

	// Half load.
	r.halfRate = float64(r.maxMessages) / r.maxElapsed.Seconds() * o.fraction
	if o.rate > 0 {
		r.halfRate = o.rate
	}
	logf("half load: %.0f messages/s for %s", r.halfRate, o.halfDuration)
	lat, err := d.measureLatency(ctx, pub, stream, r)
	if err != nil {
		return fmt.Errorf("half load: %w", err)
	}
	r.latency = lat
	want += int64(3 * r.halfMessages)
	if n, err := d.countRows(ctx); err != nil || n != want {
		return fmt.Errorf("readings holds %d rows after the half-load phase, want %d (%v)", n, want, err)
	}
	return nil
}

// awaitBridge publishes a probe (a device nobody registered: normalize
// dead-letters it) until telemetry.raw holds it: the bridge is subscribed.
func (d *deployment) awaitBridge(ctx context.Context, pub *rig.Publisher) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if err := pub.Publish(ctx, d.prefix+"/generic-json/probe", []byte(`{"probe":true}`)); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		n, err := rig.EndOffsets(ctx, d.adm, d.kafka.Topics.Raw)
		if err == nil && n > 0 {
			return nil
		}
	}
	return errors.New("the bridge did not subscribe within a minute")
}

// storedRecords returns the telemetry.readings records the sink has stored:
// the sum of its next offsets in sink_offsets (the topics are new, so
// offsets start at 0). Every stored record is one row (the benchmark
// publishes no duplicates).
func (d *deployment) storedRecords(ctx context.Context) (int64, error) {
	var n int64
	err := d.pool.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM sink_offsets WHERE consumer_group = $1 AND topic = $2`,
		d.name+"-sink", d.kafka.Topics.Readings).Scan(&n)
	return n, err
}

// sample is the sink's progress at one poll.
type sample struct {
	at     time.Time
	stored int64
}

// waitStored polls sink_offsets every poll interval until the sink stored
// want records and returns the time of the poll that saw it; samples, when
// not nil, receives every poll.
func (d *deployment) waitStored(ctx context.Context, want int64, samples *[]sample) (time.Time, error) {
	deadline := time.Now().Add(5 * time.Minute)
	var last int64
	for time.Now().Before(deadline) {
		at := time.Now()
		n, err := d.storedRecords(ctx)
		if err != nil {
			return time.Time{}, err
		}
		if samples != nil {
			*samples = append(*samples, sample{at, n})
		}
		if n >= want {
			return at, nil
		}
		last = n
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(d.o.poll):
		}
	}
	return time.Time{}, fmt.Errorf("the sink stored %d records after 5 minutes, want %d", last, want)
}

func (d *deployment) countRows(ctx context.Context) (int64, error) {
	var n int64
	err := d.pool.QueryRow(ctx, `SELECT count(*) FROM readings`).Scan(&n)
	return n, err
}

// rawCopy copies rows into the readings table of a freshly migrated schema
// of its own, copyBatch rows per COPY on one connection, and returns rows/s.
func (d *deployment) rawCopy(ctx context.Context, rows []timescale.Row) (float64, error) {
	s, err := rig.CreateSchema(ctx, os.Getenv(testenv.EnvDatabaseURL), d.name+"_rawcopy")
	if err != nil {
		return 0, err
	}
	defer func() { _ = s.Drop(context.Background()) }()
	pool, err := rig.Migrate(ctx, s.URL)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	if err := rig.EnsurePartitions(ctx, pool, rows); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := 0; i < len(rows); i += d.o.copyBatch {
		if _, err := rig.CopyRows(ctx, pool, rows[i:min(i+d.o.copyBatch, len(rows))]); err != nil {
			return 0, err
		}
	}
	return float64(len(rows)) / time.Since(start).Seconds(), nil
}

// steadyRate is the sink's rate between 10% and 90% of the phase's rows:
// the maximum rate without the pipeline filling up and draining.
func steadyRate(samples []sample, base, rows int64) float64 {
	lo, hi := base+rows/10, base+rows*9/10
	var tlo, thi time.Time
	var nlo, nhi int64
	for _, s := range samples {
		if tlo.IsZero() && s.stored >= lo {
			tlo, nlo = s.at, s.stored
		}
		if thi.IsZero() && s.stored >= hi {
			thi, nhi = s.at, s.stored
		}
	}
	if tlo.IsZero() || thi.IsZero() || !thi.After(tlo) {
		return 0
	}
	return float64(nhi-nlo) / thi.Sub(tlo).Seconds()
}

// cpuShares returns each stage's CPU use between a and b as a fraction of
// one core over elapsed.
func cpuShares(a, b map[string]usage, elapsed time.Duration) map[string]float64 {
	out := map[string]float64{}
	for s := range b {
		out[s] = (b[s].cpu - a[s].cpu).Seconds() / elapsed.Seconds()
	}
	return out
}

// latencies are publish-to-row latencies, sorted.
type latencies []time.Duration

func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(l)))) - 1
	return l[max(0, min(i, len(l)-1))]
}

// observation is one poll that saw a partition's stored offset move.
type observation struct {
	at   time.Time // when the poll's query started
	next int64
}

// measureLatency publishes at r.halfRate for halfDuration and measures the
// latency of every row.
//
// Method. Each message is encoded when it is published, with the event time
// of its reading set to that moment (milliseconds, as every format carries;
// strictly increasing per device), so a row's time column is its publish
// time. While the load runs, sink_offsets (one row per partition, written in
// the same transaction as the rows) is polled every poll interval; a poll
// whose query started at T and saw partition p's next offset move to o
// proves that the records of p below o became visible at or before T (and
// after the previous poll). After the phase, telemetry.readings is read back
// from the phase's first offsets and every record's event time decoded, so
// each row's latency is T(its partition, its offset) minus its event time.
// Resolution: one poll interval (latencies are rounded up to the poll that
// saw them: at most poll late), plus the event time's truncation to the
// millisecond. The measurement costs one tiny query per poll; it reads no
// rows from readings while the load runs.
func (d *deployment) measureLatency(ctx context.Context, pub *rig.Publisher, stream *rig.Stream, r *report) (latencies, error) {
	group, topic := d.name+"-sink", d.kafka.Topics.Readings
	offsets := func(ctx context.Context) (map[int32]int64, error) {
		rows, err := d.pool.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = $1 AND topic = $2`, group, topic)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := map[int32]int64{}
		for rows.Next() {
			var p int32
			var o int64
			if err := rows.Scan(&p, &o); err != nil {
				return nil, err
			}
			out[p] = o
		}
		return out, rows.Err()
	}
	base, err := offsets(ctx)
	if err != nil {
		return nil, err
	}
	// The poller runs until the sink stored every row of the phase.
	obs := map[int32][]observation{}
	var stored atomic.Int64
	for _, o := range base {
		stored.Add(o)
	}
	baseStored := stored.Load()
	u0, m0, t0 := d.usages(), d.scrape(ctx), time.Now()
	mb0, mt0 := machineCPU()
	sc0 := serviceCPU(d.root)
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	pollDone := make(chan error, 1)
	go func() {
		last := maps(base)
		t := time.NewTicker(d.o.poll)
		defer t.Stop()
		for {
			at := time.Now()
			cur, err := offsets(pollCtx)
			if err != nil {
				if pollCtx.Err() != nil {
					pollDone <- nil
				} else {
					pollDone <- err
				}
				return
			}
			var sum int64
			for p, o := range cur {
				if o != last[p] {
					obs[p] = append(obs[p], observation{at, o})
					last[p] = o
				}
				sum += o
			}
			stored.Store(sum)
			select {
			case <-pollCtx.Done():
				pollDone <- nil
				return
			case <-t.C:
			}
		}
	}()

	sent, lag, err := d.publishPaced(ctx, pub, stream, r.halfRate, d.o.halfDuration)
	if err != nil {
		return nil, err
	}
	r.halfMessages, r.halfMaxLag = sent, lag
	publishedAt := time.Now()
	want := baseStored + int64(3*sent)
	for stored.Load() < want {
		if time.Since(publishedAt) > 2*time.Minute {
			return nil, fmt.Errorf("the sink stored %d records 2 minutes after the phase, want %d", stored.Load(), want)
		}
		time.Sleep(d.o.poll)
	}
	r.usage, r.halfElapsed = d.usages(), time.Since(t0)
	mb1, mt1 := machineCPU()
	r.halfBusy = busyShare(mb0, mt0, mb1, mt1)
	r.halfCPUSplit = cpuBreakdown(cpuShares(u0, r.usage, r.halfElapsed), sc0, serviceCPU(d.root), r.halfBusy, r.halfElapsed)
	r.halfCPU = cpuShares(u0, r.usage, r.halfElapsed)
	r.halfStages = stageStats(m0, d.scrape(ctx), true)
	stopPoll()
	if err := <-pollDone; err != nil {
		return nil, err
	}

	// Read the phase's records back and pair each with its observation.
	codec, err := rig.NewCodec()
	if err != nil {
		return nil, err
	}
	ends, err := rig.PartitionEnds(ctx, d.adm, topic)
	if err != nil {
		return nil, err
	}
	parts := map[string]map[int32]kgo.Offset{topic: {}}
	var total int64
	for p, end := range ends {
		if end > base[p] {
			parts[topic][p] = kgo.NewOffset().At(base[p])
			total += end - base[p]
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.kafka.Brokers...), kgo.ConsumePartitions(parts))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var lat latencies
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var read int64
	for read < total {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s back: %d of %d records: %w", topic, read, total, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return nil, ferr
		}
		for _, rec := range fs.Records() {
			read++
			var v schemas.Reading
			if err := codec.Decode(rec.Value, &v); err != nil {
				return nil, err
			}
			po := obs[rec.Partition]
			i := sort.Search(len(po), func(i int) bool { return po[i].next > rec.Offset })
			if i == len(po) {
				return nil, fmt.Errorf("partition %d offset %d was never seen stored", rec.Partition, rec.Offset)
			}
			lat = append(lat, po[i].at.Sub(v.Time))
			r.toBridge = append(r.toBridge, v.ReceivedAt.Sub(v.Time))
			r.fromBridge = append(r.fromBridge, po[i].at.Sub(v.ReceivedAt))
		}
	}
	slices.Sort(lat)
	slices.Sort(r.toBridge)
	slices.Sort(r.fromBridge)
	return lat, nil
}

func maps(m map[int32]int64) map[int32]int64 {
	out := make(map[int32]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// publishPaced publishes rate messages per second for duration, message i
// at start + i/rate, cycling through the devices, each encoded just before
// it is published with the reading's time set to that moment. It returns
// the messages sent and how far behind schedule the publisher fell at most.
func (d *deployment) publishPaced(ctx context.Context, pub *rig.Publisher, stream *rig.Stream, rate float64, duration time.Duration) (int, time.Duration, error) {
	formats := simulate.Formats()
	devices := stream.Fleet.Devices()
	nBase := len(stream.Messages)/len(devices) + 1
	last := make([]atomic.Int64, len(devices)) // last event time per device, unix ms
	type job struct{ i int }
	jobs := make(chan job, 4096)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   error
		maxLag time.Duration
	)
	for range rig.Inflight {
		wg.Go(func() {
			for j := range jobs {
				dev := j.i % len(devices)
				rd := stream.Fleet.ReadingAt(dev, nBase+j.i/len(devices), stream.Start)
				now := time.Now().UnixMilli()
				for {
					prev := last[dev].Load()
					t := max(now, prev+1)
					if last[dev].CompareAndSwap(prev, t) {
						rd.Time = time.UnixMilli(t).UTC()
						break
					}
				}
				provider := stream.Fleet.Provider(dev)
				payload, err := formats[provider].Encode(rd)
				if err == nil {
					err = pub.Publish(ctx, d.prefix+"/"+provider+"/"+devices[dev], payload)
				}
				if err != nil {
					mu.Lock()
					errs = errors.Join(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	sent := 0
	for i := range int(duration / interval) {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		} else if -wait > maxLag {
			maxLag = -wait
		}
		if ctx.Err() != nil {
			break
		}
		jobs <- job{i}
		sent++
	}
	close(jobs)
	wg.Wait()
	return sent, maxLag, errs
}

// report is the result of a run.
type report struct {
	o                     options
	started               time.Time
	loadBefore, loadAfter string
	rawMQTT, rawCopy      float64
	maxMessages, maxRows  int
	maxElapsed            time.Duration
	maxPublish            time.Duration
	maxSteady             float64
	maxCPU, halfCPU       map[string]float64
	maxBusy, halfBusy     float64
	maxCPUSplit           string
	halfCPUSplit          string
	halfRate              float64
	halfMessages          int
	halfMaxLag            time.Duration
	halfElapsed           time.Duration
	latency               latencies
	toBridge, fromBridge  latencies
	usage                 map[string]usage
	maxStages, halfStages []string
}

func (r *report) String() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	uname, _ := exec.Command("uname", "-a").Output()
	nproc, _ := exec.Command("nproc").Output()
	rev, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	w("Stack VPS end-to-end benchmark (go run ./benchmarks/e2e)")
	w("date:       %s", r.started.UTC().Format(time.RFC3339))
	w("uname -a:   %s", strings.TrimSpace(string(uname)))
	w("nproc:      %s", strings.TrimSpace(string(nproc)))
	w("go:         %s", runtime.Version())
	w("git:        %s", strings.TrimSpace(string(rev)))
	w("loadavg:    %s (before)  %s (after)", r.loadBefore, r.loadAfter)
	w("setup:      3 processes (stackvps run --stages bridge|normalize|sink), defaults except test names;")
	w("            %d devices (a third per format), %d partitions, QoS 1, %d publishes in flight,", r.o.devices, r.o.partitions, rig.Inflight)
	w("            bridge.receive_maximum %d, sink.batch_size %d, sink.linger %s, pipeline.max_poll_records %d",
		config.Default().Bridge.ReceiveMaximum, config.Default().Sink.BatchSize, config.Default().Sink.Linger, config.Default().Pipeline.MaxPollRecords)
	w("            one message = one reading of 3 variables = 3 rows")
	w("")
	w("raw limits (same run, stages idle)")
	w("  mqtt delivery, bare QoS 1 subscriber:  %9.0f messages/s", r.rawMQTT)
	w("  pgx COPY, %d-row batches, 1 conn:   %9.0f rows/s (= %.0f messages/s)", r.o.copyBatch, r.rawCopy, r.rawCopy/3)
	limit := min(r.rawMQTT, r.rawCopy/3)
	w("  tightest hop:                          %9.0f messages/s", limit)
	w("")
	maxRate := float64(r.maxMessages) / r.maxElapsed.Seconds()
	w("maximum rate (%d messages = %d rows published as fast as Mosquitto takes them; first publish -> last row stored)", r.maxMessages, r.maxRows)
	w("  elapsed:                               %9.2f s (publishing took %.2f s)", r.maxElapsed.Seconds(), r.maxPublish.Seconds())
	w("  rate:                                  %9.0f messages/s = %.0f rows/s", maxRate, float64(r.maxRows)/r.maxElapsed.Seconds())
	w("  steady rate (10%%-90%% of the rows):     %9.0f rows/s", r.maxSteady)
	w("  ratio to mqtt delivery:                %9.3f", maxRate/r.rawMQTT)
	w("  ratio to pgx COPY (rows):              %9.3f", 3*maxRate/r.rawCopy)
	w("  ratio to the tightest hop:             %9.3f", maxRate/limit)
	w("  cpu (cores) bridge %.2f  normalize %.2f  sink %.2f; machine busy %.0f%% of %d cores (all processes, other tenants included)",
		r.maxCPU["bridge"], r.maxCPU["normalize"], r.maxCPU["sink"], 100*r.maxBusy, runtime.NumCPU())
	w("  cpu (cores) %s", r.maxCPUSplit)
	for _, l := range r.maxStages {
		w("  %s", l)
	}
	w("")
	name := loadName(r.o.fraction)
	if r.o.rate > 0 {
		name = "fixed-rate (-rate)"
	}
	w("%s load (%.0f messages/s = %.0f rows/s for %s; event time = publish time)", name, r.halfRate, 3*r.halfRate, r.o.halfDuration)
	w("  messages published:                    %9d (publisher at most %s behind schedule)", r.halfMessages, r.halfMaxLag.Round(time.Millisecond))
	w("  rows measured:                         %9d", len(r.latency))
	w("  latency publish -> row visible, p50:   %9.0f ms", ms(r.latency.quantile(0.50)))
	w("                                  p90:   %9.0f ms", ms(r.latency.quantile(0.90)))
	w("                                  p99:   %9.0f ms", ms(r.latency.quantile(0.99)))
	w("                                  max:   %9.0f ms", ms(r.latency.quantile(1)))
	w("  resolution: +%s (sink_offsets polled every %s; event time in whole ms)", r.o.poll, r.o.poll)
	w("  of which publish -> bridge received:   p50 %4.0f ms  p99 %4.0f ms (the bridge's received-at, same clock)",
		ms(r.toBridge.quantile(0.5)), ms(r.toBridge.quantile(0.99)))
	w("            bridge received -> visible:  p50 %4.0f ms  p99 %4.0f ms", ms(r.fromBridge.quantile(0.5)), ms(r.fromBridge.quantile(0.99)))
	w("  cpu (cores) bridge %.2f  normalize %.2f  sink %.2f; machine busy %.0f%% of %d cores",
		r.halfCPU["bridge"], r.halfCPU["normalize"], r.halfCPU["sink"], 100*r.halfBusy, runtime.NumCPU())
	w("  cpu (cores) %s", r.halfCPUSplit)
	for _, l := range r.halfStages {
		w("  %s", l)
	}
	w("")
	w("memory per stage process (/proc/<pid>/status at the end)")
	for _, s := range []string{"bridge", "normalize", "sink"} {
		w("  %-10s peak RSS (VmHWM) %6.1f MiB   RSS %6.1f MiB   cpu %6.1f s", s, mib(r.usage[s].hwm), mib(r.usage[s].rss), r.usage[s].cpu.Seconds())
	}
	return b.String()
}

// stageStats summarizes, from the stages' metrics before (a) and after (b)
// a phase, where each stage spent its time.
func stageStats(a, b map[string]map[string]float64, ages bool) []string {
	delta := func(stage, name string) float64 { return b[stage][name] - a[stage][name] }
	mean := func(stage, name string) float64 {
		c := delta(stage, name+"_count")
		if c == 0 {
			return 0
		}
		return delta(stage, name+"_sum") / c
	}
	age := func(stage, what string) string {
		if !ages {
			return ""
		}
		return fmt.Sprintf("; %s age at finish mean %.0f ms", what, 1000*mean(stage, "stackvps_stage_record_age_seconds"))
	}
	return []string{
		fmt.Sprintf("bridge:    kafka produce (receive -> ack) mean %.1f ms",
			1000*mean("bridge", "stackvps_bridge_kafka_produce_seconds")),
		fmt.Sprintf("normalize: %.0f polls of %.0f records; processed -> committed (acks, commit; overlaps the next polls) mean %.1f ms%s",
			delta("normalize", "stackvps_stage_batch_records_count"), mean("normalize", "stackvps_stage_batch_records"),
			1000*mean("normalize", "stackvps_stage_commit_seconds"), age("normalize", "record (since bridge)")),
		fmt.Sprintf("sink:      %.0f batches of %.0f rows; write (COPY+offsets+commit) mean %.1f ms; %.0f merged batches%s",
			delta("sink", "stackvps_stage_batch_records_count"), mean("sink", "stackvps_stage_batch_records"),
			1000*mean("sink", "stackvps_sink_write_seconds"), delta("sink", "stackvps_sink_merge_batches_total"),
			age("sink", "row (since publish)")),
		rollupStats(delta),
	}
}

// rollupStats summarizes the sink's rollup work in a phase: how many ranges
// of each rollup were refreshed (late readings, below the watermarks) and
// the time the database spent on them, and on plain PostgreSQL the
// watermark advances that materialized the buckets that closed.
func rollupStats(delta func(stage, name string) float64) string {
	parts := make([]string, 0, 3)
	for _, r := range []string{"1m", "1h", "1d"} {
		n := delta("sink", "stackvps_rollups_refresh_seconds_count/"+r)
		sum := delta("sink", "stackvps_rollups_refresh_seconds_sum/"+r)
		mean := 0.0
		if n > 0 {
			mean = 1000 * sum / n
		}
		parts = append(parts, fmt.Sprintf("%s %.0f x %.0f ms = %.1f s", r, n, mean, sum))
	}
	n, sum := delta("sink", "stackvps_rollups_advance_seconds_count"), delta("sink", "stackvps_rollups_advance_seconds_sum")
	mean := 0.0
	if n > 0 {
		mean = 1000 * sum / n
	}
	return fmt.Sprintf("rollups:   refreshes %s; advances %.0f x %.0f ms = %.1f s", strings.Join(parts, ", "), n, mean, sum)
}

// loadName names a fraction of the maximum rate.
func loadName(f float64) string {
	if f == 0.5 {
		return "half"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

func httpOK(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// Package e2e runs the stackvps binary as real processes against the real
// services: a simulated fleet publishes over MQTT and the test reads the rows
// back from PostgreSQL.
package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/mqttclient"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/simulate"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stackvps-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "stackvps")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/stackvps").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building stackvps: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// deployment is one isolated Stack VPS: its own schema, topics, MQTT topic
// prefix, consumer groups and client ids.
type deployment struct {
	t      *testing.T
	env    []string
	pool   *pgxpool.Pool
	kafka  config.Kafka
	mqtt   config.MQTT
	name   string // client ids, groups
	prefix string // MQTT topics
	fleet  *simulate.Fleet
	start  time.Time
}

// newDeployment migrates a fresh schema and registers the fleet's devices,
// each on its own point. env adds variables to every command (after the
// deployment's own, so they win); a non-zero fleetCfg.Start is kept.
func newDeployment(t *testing.T, fleetCfg simulate.Config, env ...string) *deployment {
	t.Helper()
	db := testenv.Database(t)
	k := testenv.Kafka(t, 6)
	mq := testenv.MQTT(t)
	name := testenv.Name(t)
	prefix := strings.ReplaceAll(name, "_", "-")
	d := &deployment{t: t, kafka: k, mqtt: mq, name: name, prefix: prefix, start: time.Now().Add(-time.Hour).Truncate(time.Second)}
	d.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URL=" + db.URL.Reveal(),
		"MQTT_BROKER=" + mq.Broker,
		"STACKVPS_LOG_FORMAT=json",
		"STACKVPS_PIPELINE_GROUP_PREFIX=" + name,
		"STACKVPS_PIPELINE_SHUTDOWN_TIMEOUT=10s",
		"STACKVPS_PIPELINE_RETRY_MAX=2s",
		"STACKVPS_PIPELINE_SESSION_TIMEOUT=6s",
		"STACKVPS_MQTT_CLIENT_ID=" + name,
		"STACKVPS_MQTT_SESSION_EXPIRY=10m",
		"STACKVPS_BRIDGE_SUBSCRIPTIONS=" + prefix + "/+/+",
		"STACKVPS_BRIDGE_TOPIC_PATTERN=" + prefix + "/{provider}/{device}",
	}
	d.env = append(d.env, testenv.KafkaEnv(k)...)
	d.env = append(d.env, env...)
	if !fleetCfg.Start.IsZero() {
		d.start = fleetCfg.Start
	}
	ctx := testenv.Context(t, time.Minute)
	out, err := d.command(ctx, "migrate", "--skip-topics").CombinedOutput()
	require.NoError(t, err, "migrate: %s", out)
	d.pool, err = pgxpool.New(ctx, db.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(d.pool.Close)

	fleetCfg.TopicPrefix = prefix
	fleetCfg.Start = d.start
	d.fleet, err = simulate.New(fleetCfg)
	require.NoError(t, err)
	store := points.NewStore(d.pool)
	var devs []points.Device
	for i, id := range d.fleet.Devices() {
		require.NoError(t, store.UpsertPoint(ctx, points.Point{Code: simulate.PointOf(id), Active: true}))
		devs = append(devs, points.Device{ID: id, Point: simulate.PointOf(id), Provider: d.fleet.Provider(i), Active: true})
	}
	require.NoError(t, store.UpsertDevices(ctx, devs...))
	t.Cleanup(func() { d.dropMQTTSession() })
	return d
}

func (d *deployment) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = d.env
	return cmd
}

// process is one running `stackvps run`.
type process struct {
	cmd    *exec.Cmd
	stderr *testenv.SyncBuffer
	done   chan error
	http   string
}

// run starts `stackvps run --stages stages` and waits until it is ready.
func (d *deployment) run(stages string) *process {
	d.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(d.t, err)
	addr := ln.Addr().String()
	require.NoError(d.t, ln.Close())
	cmd := exec.Command(binary, "run", "--stages", stages)
	cmd.Env = append(append([]string(nil), d.env...), "STACKVPS_HTTP_LISTEN="+addr)
	p := &process{cmd: cmd, stderr: &testenv.SyncBuffer{}, done: make(chan error, 1), http: addr}
	cmd.Stderr = p.stderr
	require.NoError(d.t, cmd.Start())
	go func() { p.done <- cmd.Wait() }()
	d.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if d.t.Failed() {
			d.t.Logf("stackvps run --stages %s log tail:\n%s", stages, tail(p.stderr.String(), 40))
		}
	})
	require.Eventually(d.t, func() bool {
		select {
		case err := <-p.done:
			p.done <- err
			d.t.Fatalf("stackvps run --stages %s exited: %v\n%s", stages, err, tail(p.stderr.String(), 40))
		default:
		}
		return httpOK("http://" + addr + "/readyz")
	}, 60*time.Second, 100*time.Millisecond, "stackvps run --stages %s never became ready", stages)
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		p.done <- err
		require.NoError(t, err, "exit after SIGTERM:\n%s", tail(p.stderr.String(), 30))
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30s after SIGTERM")
	}
}

// kill sends SIGKILL, as a crash would.
func (p *process) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	err := <-p.done
	p.done <- err
}

// publish sends the fleet's readings from n to n+count (per device) over MQTT.
func (d *deployment) publish(ctx context.Context, from, count int) {
	d.t.Helper()
	cm := d.publisher(ctx)
	defer func() { _ = cm.Disconnect(context.WithoutCancel(ctx)) }()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for n := from; n < from+count; n++ {
		for i := range d.fleet.Devices() {
			m, err := d.fleet.MessageAt(i, n, d.start)
			require.NoError(d.t, err)
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				// Retry until the broker acknowledges: the test's own
				// publisher must not be the thing that loses a message.
				for attempt := 0; ; attempt++ {
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := cm.Publish(pctx, &paho.Publish{Topic: m.Topic, QoS: 1, Payload: m.Payload})
					cancel()
					if err == nil {
						return
					}
					if ctx.Err() != nil || attempt > 30 {
						mu.Lock()
						failed = append(failed, err)
						mu.Unlock()
						return
					}
					_ = cm.AwaitConnection(ctx)
					time.Sleep(200 * time.Millisecond)
				}
			})
		}
	}
	wg.Wait()
	require.Empty(d.t, failed, "publishes that never got a PUBACK")
}

func (d *deployment) publisher(ctx context.Context) *autopaho.ConnectionManager {
	d.t.Helper()
	cc, err := mqttclient.ClientConfig(d.mqtt, mqttclient.Options{ClientID: d.prefix + "-pub", CleanStart: true, SessionExpiry: -1})
	require.NoError(d.t, err)
	cm, err := autopaho.NewConnection(ctx, cc)
	require.NoError(d.t, err)
	require.NoError(d.t, cm.AwaitConnection(ctx))
	return cm
}

// dropMQTTSession ends the bridge's persistent session so the broker stops
// queueing for it once the test is over.
func (d *deployment) dropMQTTSession() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := mqttclient.ClientConfig(d.mqtt, mqttclient.Options{ClientID: d.name, CleanStart: true, SessionExpiry: -1})
	if err != nil {
		return
	}
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		return
	}
	if cm.AwaitConnection(ctx) == nil {
		_ = cm.Disconnect(ctx)
	}
}

// count returns the rows in readings.
func (d *deployment) count(ctx context.Context) int {
	var n int
	require.NoError(d.t, d.pool.QueryRow(ctx, `SELECT count(*) FROM readings`).Scan(&n))
	return n
}

// waitRows waits until readings holds want rows, failing if it holds more.
func (d *deployment) waitRows(ctx context.Context, want int, within time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	last := -1
	for time.Now().Before(deadline) {
		last = d.count(ctx)
		require.LessOrEqual(d.t, last, want, "more rows than readings published")
		if last == want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	d.t.Fatalf("readings has %d rows after %s, want %d", last, within, want)
}

// verify checks every stored row against what the fleet published for
// readings [0, count) of every device: each reading stored once, in
// canonical units.
func (d *deployment) verify(ctx context.Context, count int) {
	d.t.Helper()
	type key struct {
		point, variable string
		us              int64 // time in µs: time.Time values compare their location too
	}
	want := map[key]float64{}
	for i, id := range d.fleet.Devices() {
		for n := range count {
			r := d.fleet.ReadingAt(i, n, d.start)
			p := simulate.PointOf(id)
			us := r.Time.UnixMicro()
			want[key{p, "flow", us}] = r.Flow
			want[key{p, "totalizer", us}] = r.Totalizer
			want[key{p, "level", us}] = r.Level
		}
	}
	rows, err := d.pool.Query(ctx, `SELECT point, variable, time, value, quality, device FROM readings`)
	require.NoError(d.t, err)
	defer rows.Close()
	got := 0
	for rows.Next() {
		var k key
		var ts time.Time
		var v float64
		var q int32
		var dev string
		require.NoError(d.t, rows.Scan(&k.point, &k.variable, &ts, &v, &q, &dev))
		k.us = ts.UnixMicro()
		w, ok := want[k]
		require.True(d.t, ok, "unexpected row %+v", k)
		require.InDelta(d.t, w, v, 1e-9, "value of %+v", k)
		require.Equal(d.t, k.point, simulate.PointOf(dev))
		require.Zero(d.t, q, "simulated readings are good: %+v", k)
		got++
	}
	require.NoError(d.t, rows.Err())
	require.Equal(d.t, len(want), got)
}

func httpOK(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stream publishes the fleet's readings round by round, one reading of every
// device per interval, until stopped: round n is reading n of each device.
// Every publish is retried until the broker acknowledges it (a broker that is
// down or restarting is waited for), and a round starts only once the
// previous one is fully acknowledged, so readings [0, rounds) of every device
// are exactly the readings that got a PUBACK. Rounds that fall behind the
// schedule (after an outage) are published back to back.
type stream struct {
	t        *testing.T
	stopOnce sync.Once
	stopReq  chan struct{}
	done     chan struct{}
	rounds   atomic.Int64 // rounds fully acknowledged
	acks     atomic.Int64 // PUBACKs received
	retries  atomic.Int64 // publish attempts that failed and were retried
	noMatch  atomic.Int64 // PUBACKs with reason 0x10: no subscriber matched
	lastAck  atomic.Int64 // unix nanoseconds of the last PUBACK
	err      error        // why publishing stopped early; read after done
}

// stream starts publishing; stop it with stop. Its client reconnects every
// 100 ms while the broker is away, as a fleet of devices does: they are back
// before the bridge, whose backoff grows.
func (d *deployment) stream(ctx context.Context, interval time.Duration) *stream {
	d.t.Helper()
	cc, err := mqttclient.ClientConfig(d.mqtt, mqttclient.Options{ClientID: d.prefix + "-pub", CleanStart: true, SessionExpiry: -1})
	require.NoError(d.t, err)
	cc.ReconnectBackoff = autopaho.NewConstantBackoff(100 * time.Millisecond)
	cm, err := autopaho.NewConnection(ctx, cc)
	require.NoError(d.t, err)
	require.NoError(d.t, cm.AwaitConnection(ctx))
	s := &stream{t: d.t, stopReq: make(chan struct{}), done: make(chan struct{})}
	s.lastAck.Store(time.Now().UnixNano())
	go s.run(ctx, d, cm, interval)
	d.t.Cleanup(func() {
		s.stopOnce.Do(func() { close(s.stopReq) })
		<-s.done
	})
	return s
}

func (s *stream) run(ctx context.Context, d *deployment, cm *autopaho.ConnectionManager, interval time.Duration) {
	defer close(s.done)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = cm.Disconnect(dctx)
	}()
	next := time.Now()
	for n := 0; ; n++ {
		wait := time.NewTimer(time.Until(next))
		select {
		case <-s.stopReq:
			wait.Stop()
			return
		case <-ctx.Done():
			wait.Stop()
			s.err = fmt.Errorf("round %d not started: %w", n, ctx.Err())
			return
		case <-wait.C:
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failed []error
		for i := range d.fleet.Devices() {
			m, err := d.fleet.MessageAt(i, n, d.start)
			if err != nil {
				s.err = err
				return
			}
			wg.Go(func() {
				if err := s.publishOne(ctx, cm, m); err != nil {
					mu.Lock()
					failed = append(failed, fmt.Errorf("%s reading %d: %w", m.Topic, n, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(failed) > 0 {
			s.err = fmt.Errorf("round %d: %d publish(es) never got a PUBACK: %w", n, len(failed), errors.Join(failed...))
			return
		}
		s.rounds.Store(int64(n + 1))
		next = next.Add(interval)
	}
}

// publishOne retries until the broker acknowledges m, for at most a minute.
// An attempt waits 2 s for its PUBACK (the local broker answers in
// milliseconds): a publish in flight when the connection dropped is not
// failed by paho, and must not hold the fleet back for long.
func (s *stream) publishOne(ctx context.Context, cm *autopaho.ConnectionManager, m simulate.Message) error {
	giveUp := time.Now().Add(time.Minute)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cm.Publish(pctx, &paho.Publish{Topic: m.Topic, QoS: 1, Payload: m.Payload})
		cancel()
		if err == nil {
			if resp != nil && resp.ReasonCode == 0x10 {
				// Accepted, but the broker had no subscriber for it: the
				// bridge's subscription is gone and the message with it.
				s.noMatch.Add(1)
			}
			s.acks.Add(1)
			s.lastAck.Store(time.Now().UnixNano())
			return nil
		}
		if ctx.Err() != nil || time.Now().After(giveUp) {
			return err
		}
		s.retries.Add(1)
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_ = cm.AwaitConnection(actx)
		acancel()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Rounds returns the rounds fully acknowledged so far.
func (s *stream) Rounds() int { return int(s.rounds.Load()) }

// sinceLastAck returns the time since the last PUBACK.
func (s *stream) sinceLastAck() time.Duration {
	return time.Since(time.Unix(0, s.lastAck.Load()))
}

// waitRounds waits until at least n rounds are acknowledged.
func (s *stream) waitRounds(n int, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for s.Rounds() < n {
		select {
		case <-s.done:
			s.t.Fatalf("publisher stopped at round %d (want %d): %v", s.Rounds(), n, s.err)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("publisher acknowledged %d rounds after %s, want %d", s.Rounds(), within, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends publishing after the round in progress and returns the number of
// rounds published: readings [0, n) of every device got their PUBACK.
func (s *stream) stop() int {
	s.t.Helper()
	s.stopOnce.Do(func() { close(s.stopReq) })
	<-s.done
	require.NoError(s.t, s.err, "publisher")
	return s.Rounds()
}

// metrics scrapes the process's /metrics: series (name with its labels, as
// exposed) -> value.
func (p *process) metrics() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
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
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// metricSum adds the values of every series of the metric name.
func metricSum(m map[string]float64, name string) float64 {
	var sum float64
	for series, v := range m {
		if series == name || strings.HasPrefix(series, name+"{") {
			sum += v
		}
	}
	return sum
}

// rss returns the process's resident set size, from /proc/<pid>/status.
func (p *process) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/<pid>/status")
}

// awaitReadings waits until readings holds the rows of readings [0, count)
// of every device, failing if it holds more, or if they are not all there
// within the given time: then it lists which readings are missing.
func (d *deployment) awaitReadings(ctx context.Context, count int, within time.Duration) {
	d.t.Helper()
	want := len(d.fleet.Devices()) * count * 3
	deadline := time.Now().Add(within)
	last := -1
	for time.Now().Before(deadline) {
		last = d.count(ctx)
		if last > want {
			d.t.Fatalf("readings has %d rows, more than the %d readings published:\n%s", last, want, d.missing(ctx, count))
		}
		if last == want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	d.t.Fatalf("readings has %d rows after %s, want %d:\n%s", last, within, want, d.missing(ctx, count))
}

// missing describes, per device and variable, which of readings [0, count)
// are not stored, and which stored rows are not among them.
func (d *deployment) missing(ctx context.Context, count int) string {
	type key struct {
		point, variable string
		us              int64
	}
	type id struct {
		device, variable string
		n                int
	}
	want := map[key]id{}
	for i, dev := range d.fleet.Devices() {
		for n := range count {
			us := d.fleet.ReadingAt(i, n, d.start).Time.UnixMicro()
			for _, v := range []string{"flow", "totalizer", "level"} {
				want[key{simulate.PointOf(dev), v, us}] = id{dev, v, n}
			}
		}
	}
	rows, err := d.pool.Query(ctx, `SELECT point, variable, time FROM readings`)
	if err != nil {
		return "querying readings: " + err.Error()
	}
	var unexpected []string
	for rows.Next() {
		var k key
		var ts time.Time
		if err := rows.Scan(&k.point, &k.variable, &ts); err != nil {
			rows.Close()
			return "scanning readings: " + err.Error()
		}
		k.us = ts.UnixMicro()
		if _, ok := want[k]; !ok {
			unexpected = append(unexpected, fmt.Sprintf("%s/%s/%s", k.point, k.variable, ts.UTC().Format(time.RFC3339Nano)))
		}
		delete(want, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "reading readings: " + err.Error()
	}
	byDev := map[string][]int{}
	for _, m := range want {
		byDev[m.device+" "+m.variable] = append(byDev[m.device+" "+m.variable], m.n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d rows missing, %d unexpected\n", len(want), len(unexpected))
	names := make([]string, 0, len(byDev))
	for k := range byDev {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		ns := byDev[k]
		slices.Sort(ns)
		fmt.Fprintf(&b, "  missing %s: readings %s\n", k, ranges(ns))
	}
	if len(unexpected) > 20 {
		unexpected = append(unexpected[:20], "...")
	}
	for _, u := range unexpected {
		fmt.Fprintf(&b, "  unexpected %s\n", u)
	}
	return b.String()
}

// ranges formats sorted integers as "1-4,7,9-10".
func ranges(ns []int) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(ns[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

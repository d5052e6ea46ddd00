// Package e2e runs the stackvps binary as real processes against the real
// services: a simulated fleet publishes over MQTT and the test reads the rows
// back from PostgreSQL.
package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

func newDeployment(t *testing.T, fleetCfg simulate.Config) *deployment {
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
		"KAFKA_BROKERS=" + strings.Join(k.Brokers, ","),
		"MQTT_BROKER=" + mq.Broker,
		"STACKVPS_LOG_FORMAT=json",
		"STACKVPS_KAFKA_CLIENT_ID=" + name,
		"STACKVPS_KAFKA_TOPICS_RAW=" + k.Topics.Raw,
		"STACKVPS_KAFKA_TOPICS_RAW_DLQ=" + k.Topics.RawDLQ,
		"STACKVPS_KAFKA_TOPICS_READINGS=" + k.Topics.Readings,
		"STACKVPS_KAFKA_TOPICS_READINGS_DLQ=" + k.Topics.ReadingsDLQ,
		"STACKVPS_KAFKA_TOPICS_COMPLIANCE_RECORDS=" + k.Topics.ComplianceRecords,
		"STACKVPS_KAFKA_TOPICS_NOTIFICATIONS=" + k.Topics.Notifications,
		"STACKVPS_PIPELINE_GROUP_PREFIX=" + name,
		"STACKVPS_PIPELINE_SHUTDOWN_TIMEOUT=10s",
		"STACKVPS_PIPELINE_RETRY_MAX=2s",
		"STACKVPS_PIPELINE_SESSION_TIMEOUT=6s",
		"STACKVPS_MQTT_CLIENT_ID=" + name,
		"STACKVPS_MQTT_SESSION_EXPIRY=10m",
		"STACKVPS_BRIDGE_SUBSCRIPTIONS=" + prefix + "/+/+",
		"STACKVPS_BRIDGE_SHARE_GROUP=" + name,
		"STACKVPS_BRIDGE_TOPIC_PATTERN=" + prefix + "/{provider}/{device}",
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
	stderr *syncBuffer
	done   chan error
	http   string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
	p := &process{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1), http: addr}
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

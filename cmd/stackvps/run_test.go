package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
)

// bridgeEnv is the environment of a `run --stages bridge` process of this
// test: its own MQTT client id, share group and topic prefix, its own Kafka
// topics, and its HTTP server on listen.
func bridgeEnv(t *testing.T, kafka config.Kafka, mqtt config.MQTT, prefix, listen string) []string {
	t.Helper()
	return concat(kafkaEnv(kafka), mqttEnv(mqtt), []string{
		"STACKVPS_HTTP_LISTEN=" + listen,
		"STACKVPS_MQTT_CLIENT_ID=" + mqtt.ClientID,
		// The bridge's session is persistent; let the broker forget it soon.
		"STACKVPS_MQTT_SESSION_EXPIRY=30s",
		"STACKVPS_BRIDGE_SHARE_GROUP=" + prefix,
		"STACKVPS_BRIDGE_SUBSCRIPTIONS=" + prefix + "/+/+",
		"STACKVPS_BRIDGE_TOPIC_PATTERN=" + prefix + "/{provider}/{device}",
		"STACKVPS_PIPELINE_SHUTDOWN_TIMEOUT=10s",
	})
}

// readiness is /readyz's body.
type readiness struct {
	Status string `json:"status"`
	Checks []struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"checks"`
}

// checks returns each check's outcome by name.
func (r readiness) checks() map[string]bool {
	out := map[string]bool{}
	for _, c := range r.Checks {
		out[c.Name] = c.OK
	}
	return out
}

// waitReadyz polls /readyz until it answers code with exactly the given
// checks, and returns that answer. It fails at once if the process exits.
func waitReadyz(t *testing.T, p *proc, base string, code int, checks map[string]bool) readiness {
	t.Helper()
	// The condition runs on Eventually's goroutine; the last answer is
	// shared with the failure message.
	var mu sync.Mutex
	var last string
	var got readiness
	ok := assert.Eventually(t, func() bool {
		if p.exited() {
			return true
		}
		c, body, err := httpGet(t.Context(), base+"/readyz")
		mu.Lock()
		defer mu.Unlock()
		last = fmt.Sprintf("%d %s (%v)", c, body, err)
		got = readiness{}
		if err != nil || c != code || json.Unmarshal([]byte(body), &got) != nil {
			return false
		}
		have := got.checks()
		for name, ok := range checks {
			if v, has := have[name]; !has || v != ok {
				return false
			}
		}
		return len(have) == len(checks)
	}, 20*time.Second, 100*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.False(t, p.exited(), "stackvps exited (status %d) before /readyz answered %d; last answer %s",
		p.cmd.ProcessState.ExitCode(), code, last)
	require.True(t, ok, "GET /readyz never answered %d with %v; last answer %s", code, checks, last)
	return got
}

// waitLog waits until the process logged a message.
func waitLog(t *testing.T, p *proc, msg string) {
	t.Helper()
	require.Eventually(t, func() bool {
		return p.exited() || strings.Contains(p.stderr.String(), `"msg":"`+msg+`"`)
	}, 20*time.Second, 50*time.Millisecond)
	require.Contains(t, p.stderr.String(), `"msg":"`+msg+`"`, "stackvps exited before logging %q", msg)
}

// metricValue returns the value of a sample in a Prometheus text exposition,
// or -1 when there is none.
func metricValue(metrics, sample string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)`).FindStringSubmatch(metrics)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestRunBridgeIntegration starts `stackvps run --stages bridge` against the
// real broker and Kafka, checks its HTTP endpoints, bridges the messages of
// `stackvps simulate`, and stops it with SIGTERM.
func TestRunBridgeIntegration(t *testing.T) {
	t.Parallel()
	kafka := testenv.Kafka(t, 1)
	mqtt := testenv.MQTT(t)
	prefix := testenv.Name(t)
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	base := "http://" + listen
	p := startProc(t, bridgeEnv(t, kafka, mqtt, prefix, listen), "run", "--stages", "bridge")

	r := waitReadyz(t, p, base, http.StatusOK, map[string]bool{"kafka:bridge": true, "mqtt:bridge": true})
	require.Equal(t, "ready", r.Status)

	code, body, err := httpGet(t.Context(), base+"/healthz")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status":"ok"}`, body)

	code, metrics, err := httpGet(t.Context(), base+"/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, metrics, "\nstackvps_bridge_connected 1\n")
	require.Regexp(t, `(?m)^stackvps_kafka_\w+\{client_id="`+regexp.QuoteMeta(kafka.ClientID)+`-bridge"`, metrics,
		"the bridge's Kafka client reports kprom metrics")
	require.Contains(t, metrics, "\nstackvps_bridge_receive_maximum 1000\n")

	// The subscription is made after the connection is up, in the
	// background: publish only once the bridge says it is subscribed.
	waitLog(t, p, "subscribed")
	code, stdout, stderr := runProc(t, 30*time.Second, mqttEnv(mqtt),
		"simulate", "--devices", "3", "--rate", "0", "--count", "5", "--topic-prefix", prefix)
	require.Equal(t, 0, code, "simulate\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Contains(t, stdout, "published 15 messages (0 failed")

	recordsOut := `stackvps_stage_records_out_total{stage="bridge",topic="` + kafka.Topics.Raw + `"}`
	ok := assert.Eventually(t, func() bool {
		_, m, err := httpGet(t.Context(), base+"/metrics")
		return err == nil && metricValue(m, "stackvps_bridge_messages_acked_total") == 15 &&
			metricValue(m, recordsOut) == 15
	}, 20*time.Second, 100*time.Millisecond)
	_, metrics, err = httpGet(t.Context(), base+"/metrics")
	require.NoError(t, err)
	require.True(t, ok, "the bridge never acknowledged the 15 simulated messages:\n%s", metrics)
	require.Equal(t, float64(15), metricValue(metrics, "stackvps_bridge_messages_received_total"))
	require.Equal(t, float64(0), metricValue(metrics, "stackvps_bridge_inflight_messages"))
	require.NotContains(t, metrics, "\nstackvps_bridge_messages_dead_lettered_total{")

	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.wait(t, 15*time.Second), "exit status after SIGTERM")
	t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	log := p.stderr.String()
	require.Contains(t, log, `"msg":"bridge stopped"`)
	require.Contains(t, log, `"msg":"stackvps stopped"`)
	require.NotContains(t, log, `"level":"ERROR"`)
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		require.True(t, json.Valid([]byte(l)), "every stderr line is a JSON log record: %q", l)
	}
}

// TestRunNotReadyIntegration points the bridge at a dependency that is not
// there: the process keeps running, /readyz answers 503 naming the failing
// check (and only it), /healthz still answers 200, and SIGTERM still stops
// the process cleanly.
func TestRunNotReadyIntegration(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		broken string // the check that must fail
		setup  func(t *testing.T) (config.Kafka, config.MQTT)
	}{
		{
			name:   "kafka down",
			broken: "kafka:bridge",
			setup: func(t *testing.T) (config.Kafka, config.MQTT) {
				kafka := config.Default().Kafka
				kafka.Brokers = []string{deadAddr(t)}
				kafka.ClientID = testenv.Name(t)
				kafka.DialTimeout = config.Duration(time.Second)
				return kafka, testenv.MQTT(t)
			},
		},
		{
			name:   "mqtt down",
			broken: "mqtt:bridge",
			setup: func(t *testing.T) (config.Kafka, config.MQTT) {
				mqtt := testenv.MQTT(t)
				mqtt.Broker = "mqtt://" + deadAddr(t)
				return testenv.Kafka(t, 1), mqtt
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			kafka, mqtt := c.setup(t)
			listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
			p := startProc(t, bridgeEnv(t, kafka, mqtt, testenv.Name(t), listen), "run", "--stages", "bridge")

			want := map[string]bool{"kafka:bridge": true, "mqtt:bridge": true}
			want[c.broken] = false
			r := waitReadyz(t, p, "http://"+listen, http.StatusServiceUnavailable, want)
			require.Equal(t, "not ready", r.Status)
			for _, check := range r.Checks {
				if check.Name == c.broken {
					require.NotEmpty(t, check.Error, "the failing check says why")
				}
			}
			code, _, err := httpGet(t.Context(), "http://"+listen+"/healthz")
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code, "alive even when not ready")
			require.False(t, p.exited())

			p.signal(t, syscall.SIGTERM)
			require.Equal(t, 0, p.wait(t, 15*time.Second), "exit status after SIGTERM")
			require.Contains(t, p.stderr.String(), `"msg":"bridge stopped"`)
			require.Contains(t, p.stderr.String(), `"msg":"stackvps stopped"`)
		})
	}
}

// TestRunPortInUse needs no service: the HTTP port is bound before any stage
// starts, so a taken port fails start-up at once, naming the key.
func TestRunPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	p := startProc(t, []string{"STACKVPS_HTTP_LISTEN=" + ln.Addr().String()}, "run", "--stages", "bridge")
	require.Equal(t, 1, p.wait(t, 5*time.Second), "exit status")
	stderr := p.stderr.String()
	require.Contains(t, stderr, "http.listen")
	require.Contains(t, stderr, "address already in use")
	require.NotContains(t, stderr, `"msg":"bridge started"`, "no stage starts")
}

// TestSimulateIntegration publishes a small fleet to the real broker.
func TestSimulateIntegration(t *testing.T) {
	t.Parallel()
	mqtt := testenv.MQTT(t)
	code, stdout, stderr := runProc(t, 30*time.Second, mqttEnv(mqtt),
		"simulate", "--devices", "3", "--rate", "0", "--count", "5", "--topic-prefix", testenv.Name(t))
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Contains(t, stdout, "published 15 messages (0 failed")

	code, _, stderr = runProc(t, 30*time.Second, mqttEnv(mqtt), "simulate", "--rate", "0")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "needs a count")
}

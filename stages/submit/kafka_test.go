package submit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/regulator"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/aggregate"
	"github.com/stackvps/stackvps/stages/submit"
)

// TestKafkaIntegration produces hourly compliance records (with
// corrections, duplicates and a mean-mode config) to a per-test topic and
// runs the submit stage on it: every slot ends CONFIRMED at the reference
// regulator with its receipt, with the highest version's values.
func TestKafkaIntegration(t *testing.T) {
	e := newEnv(t, regulator.Config{Seed: 4})
	k := testenv.Kafka(t, 2)
	e.point("P1")
	e.point("P2")
	c1 := e.dgaConfig("P1", obra)
	c2, err := e.store.CreateConfig(e.ctx, storeActor, newMeanConfig("P2"))
	require.NoError(t, err)
	codec, err := schemas.NewComplianceRecordCodec(e.ctx, config.SchemaRegistry{}, k.Topics.ComplianceRecords)
	require.NoError(t, err)

	slots := hours(4)
	var recs []*kgo.Record
	add := func(point string, at time.Time, version int32, flow, total, level float64, mode string) {
		cr := schemas.ComplianceRecord{Point: point, Source: aggregate.Source, PeriodStart: at.Add(-time.Hour), PeriodEnd: at,
			Flow: &flow, Totalizer: &total, Level: &level, ValueMode: mode, Expected: 60, Received: 60,
			Version: version, EmittedAt: at.Add(time.Minute)}
		b, err := codec.Encode(&cr)
		require.NoError(t, err)
		stats, err := json.Marshal(aggregate.HourStats{
			"flow":  {Count: 60, Min: 1, Max: 3, Avg: flow + 0.5, Last: flow},
			"level": {Count: 60, Min: 1, Max: 3, Avg: level + 0.25, Last: level},
		})
		require.NoError(t, err)
		recs = append(recs, &kgo.Record{Topic: k.Topics.ComplianceRecords, Key: []byte(point + "|hourly"), Value: b,
			Headers: []kgo.RecordHeader{{Key: aggregate.HeaderHourStats, Value: stats}}})
	}
	for i, at := range slots {
		for _, p := range []string{"P1", "P2"} {
			add(p, at, 50, float64(i), 1000+float64(i), 7, "instant")    // partial
			add(p, at, 60, 10+float64(i), 2000+float64(i), 8, "instant") // complete
			add(p, at, 60, 10+float64(i), 2000+float64(i), 8, "instant") // duplicate
			add(p, at, 55, 0, 0, 0, "instant")                           // stale re-emission
		}
	}
	// A record of an hour no config reports (before the configs' start).
	add("P1", time.Now().Add(-72*time.Hour).Truncate(time.Hour), 5, 1, 1, 1, "instant")
	bad := &kgo.Record{Topic: k.Topics.ComplianceRecords, Key: []byte("P1|hourly"), Value: []byte("not avro")}
	recs = append(recs, bad)

	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	pctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(pctx, recs...).FirstErr())

	reg := prometheus.NewRegistry()
	sub, err := submit.New(submitConfig(), submit.Deps{Store: e.store, Protocols: compliance.NewProtocols(nil),
		Decoder: codec, Registerer: reg, Log: testLog(t)})
	require.NoError(t, err)
	proc, err := sub.Processor()
	require.NoError(t, err)
	met, err := pipeline.NewMetrics(reg)
	require.NoError(t, err)
	pl := config.Default().Pipeline
	pl.GroupPrefix = testenv.Name(t)
	pl.SessionTimeout = config.Duration(6 * time.Second)
	stage, err := pipeline.NewStage(pipeline.StageConfig{Name: "submit", Inputs: []string{k.Topics.ComplianceRecords},
		DLQ: k.Topics.ReadingsDLQ, Processor: proc, FlushInterval: 100 * time.Millisecond},
		pipeline.Deps{Kafka: k, Pipeline: pl, Metrics: met, Health: pipeline.NewHealth(time.Second), Log: testLog(t)})
	require.NoError(t, err)
	run(t, stage)
	// The records are consumed before the submitter starts, so what goes
	// out is the highest version (a version arriving after a slot was sent
	// is a correction: checked below).
	eventually(t, 60*time.Second, "every slot filled with the complete version", func() (bool, string) {
		var n int
		require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM compliance_submissions WHERE data_version = 60`).Scan(&n))
		return n == 2*len(slots), fmt.Sprintf("%d filled", n)
	})
	run(t, sub)

	eventually(t, 60*time.Second, "every slot confirmed", func() (bool, string) {
		var n int
		var sample string
		require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FILTER (WHERE status = 'CONFIRMED' AND receipt IS NOT NULL),
				coalesce(string_agg(point || ' ' || status || '@' || slot_at::text, ', ') FILTER (WHERE data IS NOT NULL AND status <> 'CONFIRMED'), '')
			FROM compliance_submissions`).Scan(&n, &sample))
		return n == 2*len(slots), fmt.Sprintf("%d confirmed; not yet: %s", n, sample)
	})
	accepted := e.reg.Accepted()
	for i, at := range slots {
		for _, c := range []struct {
			id        int64
			work      string
			flow, lvl string
		}{
			{c1.ID, obra, fmt.Sprintf("%.2f", 10+float64(i)), "8.00"},
			{c2.ID, "OB-0602-9", fmt.Sprintf("%.2f", 10.5+float64(i)), "8.25"}, // mean: the hour-stats avg
		} {
			key := dgaKey(c.work, at)
			require.Equal(t, 1, accepted[key], key)
			s := e.state(c.id, at)
			require.Equal(t, "CONFIRMED", s.Status)
			sl, _ := e.reg.Slot(key)
			require.Equal(t, []string{s.Receipt}, sl.Receipts)
			var stored map[string]any
			require.NoError(t, json.Unmarshal(sl.Data, &stored))
			require.Equal(t, c.flow, stored["caudal"], "%s: %s", key, sl.Data)
			require.Equal(t, fmt.Sprint(2000+i), stored["totalizador"], key)
			require.Equal(t, c.lvl, stored["nivelFreaticoDelPozo"], key)
		}
	}
	var versions []int
	rows, err := e.pool.Query(e.ctx, `SELECT DISTINCT data_version FROM compliance_submissions WHERE data IS NOT NULL`)
	require.NoError(t, err)
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		versions = append(versions, v)
	}
	require.Equal(t, []int{60}, versions)

	// A correction after confirmation is recorded, never resent.
	recs = recs[:0]
	add("P1", slots[0], 70, 99, 2099, 9, "instant")
	require.NoError(t, cl.ProduceSync(pctx, recs...).FirstErr())
	eventually(t, 30*time.Second, "correction recorded", func() (bool, string) {
		var v *int
		require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT correction_version FROM compliance_submissions
			WHERE config_id = $1 AND slot_at = $2`, c1.ID, slots[0]).Scan(&v))
		return v != nil && *v == 70, fmt.Sprint(v)
	})
	// Two passes of the DGA leader over its due slots: the second began
	// after the correction was recorded, and would have sent it.
	passes := func() float64 {
		return testenv.Metric(t, reg, "stackvps_submit_passes_total", map[string]string{"source": compliance.SourceDGASubterraneas})
	}
	base := passes()
	eventually(t, 30*time.Second, "two passes over the due slots", func() (bool, string) {
		return passes() >= base+2, fmt.Sprint(passes() - base)
	})
	sl, _ := e.reg.Slot(dgaKey(obra, slots[0]))
	require.Equal(t, 1, sl.Requests, "the correction is not sent")
}

package submit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/regulator"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/aggregate"
	"github.com/stackvps/stackvps/stages/submit"
)

// TestReplicasIntegration runs three submitters on one database: only the
// leader of the source submits, and when it stops another takes over
// within seconds; every slot is accepted once.
func TestReplicasIntegration(t *testing.T) {
	e := newEnv(t, regulator.Config{Seed: 5})
	e.point("P1")
	c := e.dgaConfig("P1", obra)
	slots := hours(40)
	for i, at := range slots {
		e.fill(c, at, values(i))
	}
	_, err := e.pool.Exec(e.ctx, `UPDATE compliance_sources SET min_interval = '50 milliseconds'`)
	require.NoError(t, err)
	stops := []func(){run(t, e.newSubmit(submitConfig())), run(t, e.newSubmit(submitConfig())), run(t, e.newSubmit(submitConfig()))}
	confirmed := func() int {
		var n int
		require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM compliance_submissions WHERE status = 'CONFIRMED'`).Scan(&n))
		return n
	}
	eventually(t, 20*time.Second, "some slots confirmed", func() (bool, string) { n := confirmed(); return n >= 5, fmt.Sprint(n) })
	// The rate limit holds across replicas: one leader, min_interval apart
	// (measured on arrival, so one request may lag behind on a slow dial:
	// the span is checked, not each gap).
	reqs := e.reg.Requests()
	require.GreaterOrEqual(t, len(reqs), 5)
	span := reqs[len(reqs)-1].At.Sub(reqs[0].At)
	require.GreaterOrEqual(t, span, time.Duration(len(reqs)-1)*45*time.Millisecond, "%d requests in %s", len(reqs), span)
	// Stop the replicas one by one; the last one finishes the backlog.
	stops[0]()
	stops[1]()
	eventually(t, 30*time.Second, "every slot confirmed", func() (bool, string) {
		n := confirmed()
		return n == len(slots), fmt.Sprint(n)
	})
	require.Empty(t, e.reg.Violations())
	for _, at := range slots {
		sl, ok := e.reg.Slot(dgaKey(obra, at))
		require.True(t, ok)
		require.Equal(t, 1, sl.Requests, "one request per slot")
	}
}

func TestValues(t *testing.T) {
	dgaSub := compliance.Source{Variables: []string{"flow", "totalizer", "level"}}
	dgaFlu := compliance.Source{Variables: []string{"flow", "totalizer"}}
	stats := aggregate.HourStats{"flow": {Count: 3, Avg: 2.5}, "level": {Count: 3, Avg: 9.5}}
	p := func(v float64) *float64 { return &v }
	rec := func(mode string) schemas.ComplianceRecord {
		return schemas.ComplianceRecord{Flow: p(1), Totalizer: p(100), Level: p(9), ValueMode: mode}
	}
	cases := []struct {
		name      string
		rec       schemas.ComplianceRecord
		stats     aggregate.HourStats
		mode      string
		src       compliance.Source
		flow, lvl *float64
		total     *float64
	}{
		{name: "instant from instant", rec: rec("instant"), stats: stats, mode: "instant", src: dgaSub, flow: p(1), lvl: p(9), total: p(100)},
		{name: "mean from stats", rec: rec("instant"), stats: stats, mode: "mean", src: dgaSub, flow: p(2.5), lvl: p(9.5), total: p(100)},
		{name: "mean from a mean record without stats", rec: rec("mean"), mode: "mean", src: dgaSub, flow: p(1), lvl: p(9), total: p(100)},
		{name: "mean without stats from an instant record", rec: rec("instant"), mode: "mean", src: dgaSub, total: p(100)},
		{name: "instant from a mean record: nothing fabricated", rec: rec("mean"), stats: stats, mode: "instant", src: dgaSub, total: p(100)},
		{name: "only the source's variables", rec: rec("instant"), mode: "instant", src: dgaFlu, flow: p(1), total: p(100)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := submit.Values(tc.rec, tc.stats, tc.mode, tc.src)
			require.Equal(t, tc.flow, v.Flow)
			require.Equal(t, tc.lvl, v.Level)
			require.Equal(t, tc.total, v.Totalizer)
		})
	}
}

package submit_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/regulator"
)

// TestOutcomesIntegration drives one slot per regulator behaviour through
// the submitter and checks the state each ends in, its attempts, and that
// the regulator accepted each slot at most once.
func TestOutcomesIntegration(t *testing.T) {
	e := newEnv(t, regulator.Config{Seed: 1})
	e.point("P1")
	c := e.dgaConfig("P1", obra)
	slots := hours(9)
	type tc struct {
		name     string
		fault    *regulator.Fault
		values   *compliance.Values
		status   string
		receipt  bool
		reason   string
		outcomes []string
		accepted int
	}
	cases := []tc{
		{name: "accepted", status: store.StatusConfirmed, receipt: true, outcomes: []string{"send:confirmed"}, accepted: 1},
		{name: "5xx twice then accepted", fault: &regulator.Fault{Kind: regulator.FaultServerError, Count: 2},
			status: store.StatusConfirmed, receipt: true,
			outcomes: []string{"send:transient", "retry:transient", "retry:confirmed"}, accepted: 1},
		{name: "rate limited", fault: &regulator.Fault{Kind: regulator.FaultRateLimit, Count: 1, RetryAfter: time.Second},
			status: store.StatusConfirmed, receipt: true, outcomes: []string{"send:rate_limited", "retry:confirmed"}, accepted: 1},
		{name: "hang after accept", fault: &regulator.Fault{Kind: regulator.FaultHang, Count: 1},
			status: store.StatusConfirmed, receipt: true,
			outcomes: []string{"send:unknown", "resend_after_unknown:confirmed"}, accepted: 1},
		{name: "wrong informant", fault: &regulator.Fault{Kind: regulator.FaultWrongInformant},
			status: store.StatusRejected, reason: "informante", outcomes: []string{"send:rejected_terminal"}},
		{name: "rejected once", fault: &regulator.Fault{Kind: regulator.FaultReject, Count: 1},
			status: store.StatusConfirmed, receipt: true, outcomes: []string{"send:rejected", "retry:confirmed"}, accepted: 1},
		{name: "rejected until final", fault: &regulator.Fault{Kind: regulator.FaultReject},
			status: store.StatusRejected, reason: "final after 3",
			outcomes: []string{"send:rejected", "retry:rejected", "retry:rejected"}},
		{name: "no receipt", fault: &regulator.Fault{Kind: regulator.FaultNoReceipt, Count: 1},
			status: store.StatusConfirmed, reason: "review", outcomes: []string{"send:confirmed"}, accepted: 1},
		{name: "invalid: no flow", values: &compliance.Values{Totalizer: f64(5)},
			status: store.StatusRejected, reason: "invalid", outcomes: []string{"invalid:invalid"}},
	}
	require.Len(t, slots, len(cases))
	for i, c0 := range cases {
		if c0.fault != nil {
			f := *c0.fault
			f.Match = dgaKey(obra, slots[i])
			require.NoError(t, e.reg.AddFaults(f))
		}
		v := values(i)
		if c0.values != nil {
			v = *c0.values
		}
		e.fill(c, slots[i], v)
	}
	run(t, e.newSubmit(submitConfig()))
	final := func(s slotState, want tc) bool {
		return s.Status == want.status && (s.Status != store.StatusRejected || s.Next == nil)
	}
	eventually(t, 30*time.Second, "every slot final", func() (bool, string) {
		var pending []string
		for i, want := range cases {
			if s := e.state(c.ID, slots[i]); !final(s, want) {
				pending = append(pending, fmt.Sprintf("%s: %+v", want.name, s))
			}
		}
		return len(pending) == 0, strings.Join(pending, "; ")
	})
	accepted := e.reg.Accepted()
	for i, want := range cases {
		t.Run(want.name, func(t *testing.T) {
			s := e.state(c.ID, slots[i])
			require.Equal(t, want.status, s.Status)
			require.Equal(t, want.receipt, s.Receipt != "", "receipt %q", s.Receipt)
			require.Contains(t, s.Reason, want.reason)
			require.Equal(t, want.outcomes, e.outcomes(c.ID, slots[i]))
			require.Zero(t, s.Open)
			require.Equal(t, want.accepted, accepted[dgaKey(obra, slots[i])])
			if want.receipt {
				sl, ok := e.reg.Slot(dgaKey(obra, slots[i]))
				require.True(t, ok)
				require.Equal(t, []string{s.Receipt}, sl.Receipts)
			}
		})
	}
	require.Empty(t, e.reg.Violations())
	// The invalid slot never reached the regulator.
	_, ok := e.reg.Slot(dgaKey(obra, slots[8]))
	require.False(t, ok)
	// Passwords never reach the attempts table.
	var leaks int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM compliance_attempts WHERE request::text LIKE '%clave%'`).Scan(&leaks))
	require.Zero(t, leaks)
}

// TestUnknownWithoutDuplicateDetectionIntegration: an SMA request that
// hangs after the regulator stored it is never resent blindly: the slot
// is set aside for review.
func TestUnknownWithoutDuplicateDetectionIntegration(t *testing.T) {
	e := newEnv(t, regulator.Config{Seed: 2})
	e.point("P1")
	c := e.smaConfig("P1")
	slots := hours(2)
	// The first submission is stored, then hangs: the outcome is unknown.
	require.NoError(t, e.reg.AddFaults(regulator.Fault{Kind: regulator.FaultHang, Endpoint: regulator.EndpointSMA, Count: 1}))
	e.fill(c, slots[0], values(0))
	run(t, e.newSubmit(submitConfig()))
	eventually(t, 20*time.Second, "slot set aside", func() (bool, string) {
		s := e.state(c.ID, slots[0])
		return s.Status == store.StatusError && s.Next == nil, fmt.Sprintf("%+v", s)
	})
	s := e.state(c.ID, slots[0])
	require.Contains(t, s.Reason, store.ReasonNeedsReview)
	require.Equal(t, []string{"send:unknown"}, e.outcomes(c.ID, slots[0]))
	// A person asks for a resubmission: exactly one more submission.
	var id int64
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT id FROM compliance_submissions WHERE config_id = $1 AND slot_at = $2`,
		c.ID, slots[0]).Scan(&id))
	_, err := e.store.RequestResubmission(e.ctx, store.SystemActor("test"), id, "checked with SMA: not on file")
	require.NoError(t, err)
	eventually(t, 20*time.Second, "slot confirmed", func() (bool, string) {
		s := e.state(c.ID, slots[0])
		return s.Status == store.StatusConfirmed, fmt.Sprintf("%+v", s)
	})
	require.Equal(t, []string{"send:unknown", "resubmission:confirmed"}, e.outcomes(c.ID, slots[0]))
}

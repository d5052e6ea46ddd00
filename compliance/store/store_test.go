package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
)

func TestSyncSourcesIntegration(t *testing.T) {
	f := newFixture(t)
	srcs, err := f.store.Sources(f.ctx)
	require.NoError(t, err)
	require.Len(t, srcs, 3)
	var before time.Time
	require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT max(updated_at) FROM compliance_sources`).Scan(&before))
	builtin, err := compliance.Sources(config.Default().Compliance)
	require.NoError(t, err)
	require.NoError(t, f.store.SyncSources(f.ctx, builtin)) // idempotent: nothing touched
	var after time.Time
	require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT max(updated_at) FROM compliance_sources`).Scan(&after))
	require.Equal(t, before, after)
	src, err := f.store.Source(f.ctx, compliance.SourceDGASubterraneas)
	require.NoError(t, err)
	require.Equal(t, builtin[0].MinInterval, src.MinInterval)
	require.Equal(t, 24*time.Hour, src.RetryRejectedAfter)
	require.JSONEq(t, string(builtin[0].Schema), string(src.Schema))
	// A source dropped from the configuration is deactivated, not deleted.
	require.NoError(t, f.store.SyncSources(f.ctx, builtin[:2]))
	src, err = f.store.Source(f.ctx, builtin[2].Code)
	require.NoError(t, err)
	require.False(t, src.Active)
	_, err = f.store.Source(f.ctx, "nope")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestConfigsIntegration(t *testing.T) {
	f := newFixture(t)
	f.point("P1")
	c := f.config("P1", "2026-01-01")
	require.True(t, c.HasCredentials)
	require.Equal(t, compliance.ValueInstant, c.Params.ValueMode)

	// Credentials are sealed, never in the audit log.
	var sealed []byte
	require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT credentials FROM compliance_configs WHERE id = $1`, c.ID).Scan(&sealed))
	require.NotContains(t, string(sealed), "secret-pw")
	evs, err := audit.List(f.ctx, f.pool, audit.Filter{EntityType: "compliance_config"})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, "compliance_config.create", evs[0].Action)
	require.NotContains(t, string(evs[0].After), "secret-pw")
	require.Contains(t, string(evs[0].After), `"credentials": "****"`)

	// Overlaps are refused.
	_, err = f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: "P1", Source: compliance.SourceDGASubterraneas,
		Params: dgaParams(), StartDate: date("2026-03-01")})
	require.ErrorIs(t, err, store.ErrConflict)
	ended, err := f.store.EndConfig(f.ctx, actor, c.ID, date("2026-03-01"))
	require.NoError(t, err)
	require.Equal(t, date("2026-03-01"), *ended.EndDate)
	c2, err := f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: "P1", Source: compliance.SourceDGASubterraneas,
		Params: dgaParams(), StartDate: date("2026-03-01")})
	require.NoError(t, err)
	require.False(t, c2.HasCredentials)
	_, err = f.store.UpdateConfig(f.ctx, actor, c.ID, store.ConfigUpdate{ClearEndDate: true})
	require.ErrorIs(t, err, store.ErrConflict)

	// Validation names the field.
	bad := dgaParams()
	bad.WorkCode = "X"
	_, err = f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: "P1", Source: compliance.SourceSMA,
		Params: bad, StartDate: date("2026-01-01")})
	require.ErrorIs(t, err, store.ErrInvalid)
	require.Contains(t, err.Error(), "config.uf_id")
	_, err = f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: "nope", Source: compliance.SourceDGASubterraneas,
		Params: dgaParams(), StartDate: date("2026-01-01")})
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: "P1", Source: "nope",
		Params: dgaParams(), StartDate: date("2026-01-01")})
	require.ErrorIs(t, err, store.ErrInvalid)

	// Update: new credentials, audited without them.
	_, err = f.store.UpdateConfig(f.ctx, actor, c2.ID, store.ConfigUpdate{Credentials: &compliance.Credentials{Username: "a", Password: "pw2"}})
	require.NoError(t, err)
	got, err := f.store.GetConfig(f.ctx, c2.ID)
	require.NoError(t, err)
	require.True(t, got.HasCredentials)
	evs, err = audit.List(f.ctx, f.pool, audit.Filter{EntityType: "compliance_config", Limit: 1})
	require.NoError(t, err)
	require.NotContains(t, string(evs[0].After), "pw2")

	list, err := f.store.ListConfigs(f.ctx, store.ConfigFilter{Point: "P1", ActiveOn: ptr(date("2026-02-01"))})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, c.ID, list[0].ID)
	list, err = f.store.ListConfigs(f.ctx, store.ConfigFilter{Points: []string{}})
	require.NoError(t, err)
	require.Empty(t, list)
	_, err = f.store.GetConfig(f.ctx, 999)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestSlotsIntegration(t *testing.T) {
	f := newFixture(t)
	f.point("P1")
	now := time.Date(2026, 6, 10, 12, 30, 0, 0, time.UTC)
	c := f.config("P1", "2026-06-10")
	n, err := f.store.EnsureSlots(f.ctx, now, 24*time.Hour, 720*time.Hour)
	require.NoError(t, err)
	// From 2026-06-10 00:00 at UTC-4 (04:00Z) to now+24h (2026-06-11 12:30Z): 33 hourly slots.
	require.Equal(t, 33, n)
	n, err = f.store.EnsureSlots(f.ctx, now, 24*time.Hour, 720*time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = f.store.EnsureSlots(f.ctx, now.Add(2*time.Hour), 24*time.Hour, 720*time.Hour)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	slot := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)
	v := compliance.Values{Flow: ptr(1.5), Totalizer: ptr(100.0)}
	res, err := f.store.FillSlot(f.ctx, c.ID, slot, v, 10)
	require.NoError(t, err)
	require.Equal(t, store.Filled, res)
	res, err = f.store.FillSlot(f.ctx, c.ID, slot, v, 10)
	require.NoError(t, err)
	require.Equal(t, store.Stale, res)
	res, err = f.store.FillSlot(f.ctx, c.ID, slot, compliance.Values{Flow: ptr(2.0)}, 12)
	require.NoError(t, err)
	require.Equal(t, store.Filled, res)
	_, err = f.store.FillSlot(f.ctx, c.ID, slot.Add(time.Minute), v, 1)
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = f.store.FillSlot(f.ctx, c.ID, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC), v, 1)
	require.ErrorIs(t, err, store.ErrInvalid)

	page, err := f.store.ListSubmissions(f.ctx, store.SubmissionFilter{Point: "P1", From: slot, To: slot.Add(time.Second)})
	require.NoError(t, err)
	require.Len(t, page.Submissions, 1)
	sub := page.Submissions[0]
	require.Equal(t, 2.0, *sub.Data.Flow)
	require.Nil(t, sub.Data.Totalizer)
	require.Equal(t, 12, sub.DataVersion)
	require.Equal(t, slot.Add(-time.Hour), sub.PeriodStart)

	// Write-off: slots without data older than the bound.
	n, err = f.store.WriteOff(f.ctx, now, 3*time.Hour)
	require.NoError(t, err)
	require.Equal(t, 6, n) // 04:00 .. 09:00, older than 12:30-3h
	page, err = f.store.ListSubmissions(f.ctx, store.SubmissionFilter{Statuses: []string{store.StatusMissing}, Limit: 2})
	require.NoError(t, err)
	require.Len(t, page.Submissions, 2)
	require.NotEmpty(t, page.Next)
	require.Equal(t, time.Date(2026, 6, 10, 9, 0, 0, 0, time.UTC), page.Submissions[0].SlotAt)
	page, err = f.store.ListSubmissions(f.ctx, store.SubmissionFilter{Statuses: []string{store.StatusMissing}, Limit: 2, After: page.Next})
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 6, 10, 7, 0, 0, 0, time.UTC), page.Submissions[0].SlotAt)
	_, err = f.store.ListSubmissions(f.ctx, store.SubmissionFilter{After: "garbage!"})
	require.ErrorIs(t, err, store.ErrInvalid)

	// Ending the config prunes untouched slots after the end.
	_, err = f.store.EndConfig(f.ctx, actor, c.ID, date("2026-06-11"))
	require.NoError(t, err)
	page, err = f.store.ListSubmissions(f.ctx, store.SubmissionFilter{ConfigID: c.ID, From: time.Date(2026, 6, 11, 4, 0, 0, 0, time.UTC)})
	require.NoError(t, err)
	require.Empty(t, page.Submissions)

}

func policy() store.Policy {
	return store.Policy{RetryRejectedAfter: 24 * time.Hour, MaxAttempts: 2, UnknownAfter: 15 * time.Minute,
		Backoff: func(n int) time.Duration { return time.Duration(n) * time.Minute }}
}

func (f *fixture) due(source string, now time.Time) []store.Due {
	f.t.Helper()
	d, err := f.store.DueSlots(f.ctx, source, now, 10)
	require.NoError(f.t, err)
	return d
}

func TestStateMachineIntegration(t *testing.T) {
	f := newFixture(t)
	f.point("P1")
	c := f.config("P1", "2026-06-10")
	src := compliance.SourceDGASubterraneas
	slot := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)
	now := slot.Add(10 * time.Minute)
	require.Empty(t, f.due(src, now))
	_, err := f.store.FillSlot(f.ctx, c.ID, slot, compliance.Values{Flow: ptr(1.0), Totalizer: ptr(5.0), Level: ptr(3.0)}, 3)
	require.NoError(t, err)
	// Not due before its instant.
	require.Empty(t, f.due(src, slot.Add(-time.Minute)))
	due := f.due(src, now)
	require.Len(t, due, 1)
	d := due[0]
	require.Equal(t, store.KindSend, d.Kind)
	creds, err := f.store.OpenCredentials(d.Sealed)
	require.NoError(t, err)
	require.Equal(t, "secret-pw", creds.Password)
	require.Equal(t, 1.0, *d.Slot(creds).Values.Flow)

	// transient -> ERROR with backoff
	b, err := f.store.BeginAttempt(f.ctx, d, d.Kind, []byte(`{"password":"****"}`), now, now.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, store.StatusSent, f.status(d.ID))
	_, err = f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Hour))
	require.ErrorIs(t, err, store.ErrStale, "a second begin from the same read must fail")
	tr, err := f.store.FinishAttempt(f.ctx, d.ID, b, compliance.Outcome{Kind: compliance.Transient, HTTPStatus: 503, Reason: "503"}, now, policy())
	require.NoError(t, err)
	require.Equal(t, store.StatusError, tr.Status)
	require.Equal(t, now.Add(time.Minute), *tr.NextAttempt)
	_, err = f.store.FinishAttempt(f.ctx, d.ID, b, compliance.Outcome{Kind: compliance.Confirmed, Receipt: "X"}, now, policy())
	require.ErrorIs(t, err, store.ErrStale, "an outcome is filled once")
	require.Empty(t, f.due(src, now))

	// retry -> rejected -> REJECTED, retried after a day
	now = now.Add(2 * time.Minute)
	d = f.due(src, now)[0]
	require.Equal(t, store.KindRetry, d.Kind)
	b, err = f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Hour))
	require.NoError(t, err)
	tr, err = f.store.FinishAttempt(f.ctx, d.ID, b, compliance.Outcome{Kind: compliance.Rejected, HTTPStatus: 200, Reason: "status 01"}, now, policy())
	require.NoError(t, err)
	require.Equal(t, store.StatusRejected, tr.Status)
	require.Equal(t, now.Add(24*time.Hour), *tr.NextAttempt)

	// unknown -> stays SENT, due again after unknown_after as a resend
	now = now.Add(24 * time.Hour)
	d = f.due(src, now)[0]
	b, err = f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Hour))
	require.NoError(t, err)
	tr, err = f.store.FinishAttempt(f.ctx, d.ID, b, compliance.Outcome{Kind: compliance.Unknown, Reason: "timeout"}, now, policy())
	require.NoError(t, err)
	require.Equal(t, store.StatusSent, tr.Status)
	require.Empty(t, f.due(src, now.Add(14*time.Minute)))
	now = now.Add(15 * time.Minute)
	d = f.due(src, now)[0]
	require.Equal(t, store.KindResendAfterUnknown, d.Kind)

	// A crash between BeginAttempt and FinishAttempt leaves an open
	// attempt; the next begin closes it as abandoned.
	_, err = f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Minute))
	require.NoError(t, err)
	now = now.Add(time.Minute)
	d = f.due(src, now)[0]
	require.Equal(t, store.KindResendAfterUnknown, d.Kind)
	b, err = f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Hour))
	require.NoError(t, err)
	tr, err = f.store.FinishAttempt(f.ctx, d.ID, b, compliance.Outcome{Kind: compliance.Confirmed, Receipt: "R1", HTTPStatus: 400}, now, policy())
	require.NoError(t, err)
	require.Equal(t, store.StatusConfirmed, tr.Status)

	sub, err := f.store.GetSubmission(f.ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, "R1", sub.Receipt)
	require.Equal(t, 5, sub.Attempts)
	require.Len(t, sub.History, 5)
	for _, a := range sub.History {
		require.NotEmpty(t, a.Outcome, "attempt %d is complete", a.Attempt)
	}
	require.Equal(t, "unknown", sub.History[3].Outcome)
	require.Contains(t, sub.History[3].Error, "abandoned")

	// Late data after confirmation is a correction, not resent.
	res, err := f.store.FillSlot(f.ctx, c.ID, slot, compliance.Values{Flow: ptr(9.0)}, 7)
	require.NoError(t, err)
	require.Equal(t, store.Corrected, res)
	require.Empty(t, f.due(src, now.Add(48*time.Hour)))

	// A resubmission allows exactly one more submission, with the correction.
	_, err = f.store.RequestResubmission(f.ctx, actor, 999, "x")
	require.ErrorIs(t, err, store.ErrNotFound)
	sub, err = f.store.RequestResubmission(f.ctx, actor, d.ID, "meter recalibrated")
	require.NoError(t, err)
	require.Equal(t, store.StatusPending, sub.Status)
	require.Equal(t, 9.0, *sub.Data.Flow)
	require.Equal(t, 1, sub.Round)
	_, err = f.store.RequestResubmission(f.ctx, actor, d.ID, "again")
	require.ErrorIs(t, err, store.ErrConflict)
	d = f.due(src, now)[0]
	require.Equal(t, store.KindResubmission, d.Kind)
	b, err = f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Hour))
	require.NoError(t, err)
	_, err = f.store.FinishAttempt(f.ctx, d.ID, b, compliance.Outcome{Kind: compliance.Confirmed, Receipt: "R2"}, now, policy())
	require.NoError(t, err)
	require.Equal(t, store.StatusConfirmed, f.status(d.ID))
	evs, err := audit.List(f.ctx, f.pool, audit.Filter{Action: "compliance_submission.resubmit"})
	require.NoError(t, err)
	require.Len(t, evs, 1)

	// Attempts are append-only.
	_, err = f.pool.Exec(f.ctx, `DELETE FROM compliance_attempts`)
	require.Error(t, err)
	_, err = f.pool.Exec(f.ctx, `UPDATE compliance_attempts SET receipt = 'forged'`)
	require.Error(t, err)
}

func TestTerminalOutcomesIntegration(t *testing.T) {
	f := newFixture(t)
	f.point("P1")
	c := f.config("P1", "2026-06-10")
	src := compliance.SourceDGASubterraneas
	base := time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)
	for i := range 4 {
		_, err := f.store.FillSlot(f.ctx, c.ID, base.Add(time.Duration(i)*time.Hour), compliance.Values{Flow: ptr(1.0)}, 1)
		require.NoError(t, err)
	}
	now := base.Add(5 * time.Hour)
	due := f.due(src, now)
	require.Len(t, due, 4)
	for i := 1; i < 4; i++ {
		require.True(t, due[i-1].SlotAt.Before(due[i].SlotAt), "oldest first")
	}
	run := func(d store.Due, o compliance.Outcome) store.Transition {
		b, err := f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Hour))
		require.NoError(t, err)
		tr, err := f.store.FinishAttempt(f.ctx, d.ID, b, o, now, policy())
		require.NoError(t, err)
		return tr
	}
	// rejected_terminal: no next attempt.
	tr := run(due[0], compliance.Outcome{Kind: compliance.RejectedTerminal, Reason: "Usuario no es el informante"})
	require.Equal(t, store.StatusRejected, tr.Status)
	require.Nil(t, tr.NextAttempt)
	// rate_limited: back to PENDING after RetryAfter.
	tr = run(due[1], compliance.Outcome{Kind: compliance.RateLimited, RetryAfter: 30 * time.Second})
	require.Equal(t, store.StatusPending, tr.Status)
	require.Equal(t, now.Add(30*time.Second), *tr.NextAttempt)
	// confirmed without receipt: CONFIRMED with a review reason.
	tr = run(due[2], compliance.Outcome{Kind: compliance.Confirmed})
	require.Equal(t, store.StatusConfirmed, tr.Status)
	require.Contains(t, tr.Reason, "review")
	// rejected twice (MaxAttempts 2): final.
	tr = run(due[3], compliance.Outcome{Kind: compliance.Rejected, Reason: "no"})
	require.NotNil(t, tr.NextAttempt)
	now = now.Add(25 * time.Hour)
	var d3 store.Due
	for _, d := range f.due(src, now) {
		if d.ID == due[3].ID {
			d3 = d
		}
	}
	require.NotZero(t, d3.ID)
	tr = run(d3, compliance.Outcome{Kind: compliance.Rejected, Reason: "no"})
	require.Nil(t, tr.NextAttempt)
	require.Contains(t, tr.Reason, "final after 2")

	// Invalid: REJECTED locally, never sent; new data puts it back.
	slot := base.Add(6 * time.Hour)
	_, err := f.store.FillSlot(f.ctx, c.ID, slot, compliance.Values{}, 1)
	require.NoError(t, err)
	var d store.Due
	for _, x := range f.due(src, now) {
		if x.SlotAt.Equal(slot) {
			d = x
		}
	}
	require.NoError(t, f.store.RecordInvalid(f.ctx, d, "caudal missing", now))
	require.Equal(t, store.StatusRejected, f.status(d.ID))
	res, err := f.store.FillSlot(f.ctx, c.ID, slot, compliance.Values{Flow: ptr(1.0)}, 2)
	require.NoError(t, err)
	require.Equal(t, store.Filled, res)
	require.Equal(t, store.StatusPending, f.status(d.ID))

	// SetAside: unknown outcome without duplicate detection.
	for _, x := range f.due(src, now) {
		if x.ID == d.ID {
			d = x
		}
	}
	_, err = f.store.BeginAttempt(f.ctx, d, d.Kind, nil, now, now.Add(time.Minute))
	require.NoError(t, err)
	now = now.Add(time.Minute)
	for _, x := range f.due(src, now) {
		if x.ID == d.ID {
			d = x
		}
	}
	require.Equal(t, store.StatusSent, d.Status)
	require.NoError(t, f.store.SetAside(f.ctx, d, store.ReasonNeedsReview, now))
	sub, err := f.store.GetSubmission(f.ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusError, sub.Status)
	require.Nil(t, sub.NextAttemptAt)
	require.Equal(t, "unknown", sub.History[len(sub.History)-1].Outcome)

	// A confirmed attempt in the round blocks any further send.
	err = f.store.SetAside(f.ctx, d, "x", now)
	require.True(t, errors.Is(err, store.ErrStale))
	counts, oldest, err := f.store.StatusCounts(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, counts[src][store.StatusConfirmed])
	require.Equal(t, base.Add(time.Hour), oldest[src].UTC())
}

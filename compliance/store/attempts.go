package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/compliance"
)

// Attempt kinds (compliance_attempts.kind).
const (
	KindSend               = "send"
	KindRetry              = "retry"
	KindResendAfterUnknown = "resend_after_unknown"
	KindResubmission       = "resubmission"
	KindInvalid            = "invalid"
)

// ReasonNeedsReview is the reason of a slot whose outcome is unknown and
// whose protocol cannot detect a duplicate: it is set aside (ERROR, no
// next attempt) for a person to check with the regulator.
const ReasonNeedsReview = "outcome unknown: needs review"

// reasonAbandoned is the error of an attempt whose submitter stopped
// before it recorded the outcome.
const reasonAbandoned = "abandoned: the submitter stopped before it recorded the outcome; the request may or may not have reached the regulator"

// Due is a slot the submitter should act on now.
type Due struct {
	Submission
	// Kind is what to do: KindSend, KindRetry, KindResubmission, or
	// KindResendAfterUnknown for a SENT slot whose outcome is unknown.
	Kind string
	// Params are the config's params; Sealed its sealed credentials
	// (OpenCredentials).
	Params compliance.Params
	Sealed []byte
}

// Slot returns the compliance.Slot of d with creds.
func (d Due) Slot(creds compliance.Credentials) compliance.Slot {
	var v compliance.Values
	if d.Data != nil {
		v = *d.Data
	}
	return compliance.Slot{ID: d.ID, Point: d.Point, At: d.SlotAt, Values: v, Params: d.Params, Credentials: creds}
}

// DueSlots returns up to limit slots of source to act on at now, oldest
// slot first (backfill goes in chronological order): PENDING with data
// (and no rate-limit delay pending), ERROR and REJECTED whose
// next_attempt_at has come, and SENT whose next_attempt_at (the
// unknown-outcome deadline) has come. Slots after now are never due.
func (s *Store) DueSlots(ctx context.Context, source string, now time.Time, limit int) ([]Due, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+submissionColumns("s.")+`, c.config, c.credentials
		FROM compliance_submissions s JOIN compliance_configs c ON c.id = s.config_id
		WHERE s.id IN (
			(SELECT id FROM compliance_submissions WHERE source = $1 AND status = 'PENDING' AND data IS NOT NULL
				AND slot_at <= $2 AND (next_attempt_at IS NULL OR next_attempt_at <= $2) ORDER BY slot_at LIMIT $3)
			UNION ALL
			(SELECT id FROM compliance_submissions WHERE source = $1 AND status = 'ERROR' AND next_attempt_at <= $2
				ORDER BY slot_at LIMIT $3)
			UNION ALL
			(SELECT id FROM compliance_submissions WHERE source = $1 AND status = 'REJECTED' AND next_attempt_at <= $2
				ORDER BY slot_at LIMIT $3)
			UNION ALL
			(SELECT id FROM compliance_submissions WHERE source = $1 AND status = 'SENT' AND next_attempt_at <= $2
				ORDER BY slot_at LIMIT $3))
		ORDER BY s.slot_at, s.id LIMIT $3`, source, now, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the due slots of %s: %w", source, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Due, error) {
		var d Due
		var params []byte
		dest := append(d.Submission.scanDest(), &params, &d.Sealed)
		if err := r.Scan(dest...); err != nil {
			return d, err
		}
		if err := d.Submission.decode(); err != nil {
			return d, err
		}
		if err := json.Unmarshal(params, &d.Params); err != nil {
			return d, fmt.Errorf("decoding config %d: %w", d.ConfigID, err)
		}
		d.Params = d.Params.Normalized()
		switch {
		case d.Status == StatusSent:
			d.Kind = KindResendAfterUnknown
		case d.Round > 0 && d.RoundAttempts == 0:
			d.Kind = KindResubmission
		case d.Attempts == 0:
			d.Kind = KindSend
		default:
			d.Kind = KindRetry
		}
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the due slots of %s: %w", source, err)
	}
	return out, nil
}

// lockDue locks d's row and checks that it is still as DueSlots read it,
// and that no attempt of its round returned confirmed (if one did, the
// slot is set CONFIRMED with that receipt and ErrAlreadyConfirmed is
// returned: a slot the regulator holds is never sent again).
func lockDue(ctx context.Context, tx pgx.Tx, d Due, now time.Time) error {
	var status string
	var attempts, round int
	err := tx.QueryRow(ctx, `SELECT status, attempts, round FROM compliance_submissions WHERE id = $1 FOR UPDATE`, d.ID).
		Scan(&status, &attempts, &round)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("slot %d: %w", d.ID, ErrStale)
	}
	if err != nil {
		return fmt.Errorf("locking slot %d: %w", d.ID, err)
	}
	if status != d.Status || attempts != d.Attempts || round != d.Round {
		return fmt.Errorf("slot %d is %s after %d attempts (round %d), not %s after %d: %w",
			d.ID, status, attempts, round, d.Status, d.Attempts, ErrStale)
	}
	var receipt *string
	err = tx.QueryRow(ctx, `SELECT receipt FROM compliance_attempts WHERE submission_id = $1 AND round = $2
		AND outcome = 'confirmed' ORDER BY attempt LIMIT 1`, d.ID, d.Round).Scan(&receipt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking for a confirmed attempt of slot %d: %w", d.ID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE compliance_submissions SET status = 'CONFIRMED', receipt = $2,
			reason = CASE WHEN $2::text IS NULL THEN 'confirmed by an earlier attempt without a receipt: needs review' END,
			next_attempt_at = NULL, confirmed_at = coalesce(confirmed_at, $3), updated_at = now() WHERE id = $1`,
		d.ID, receipt, now); err != nil {
		return fmt.Errorf("confirming slot %d: %w", d.ID, err)
	}
	return fmt.Errorf("slot %d: %w", d.ID, ErrAlreadyConfirmed)
}

// abandonOpen fills the outcome of d's unfinished attempts (the submitter
// stopped before it knew) as unknown.
func abandonOpen(ctx context.Context, tx pgx.Tx, id int64, now time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE compliance_attempts SET outcome = 'unknown', finished_at = $2, error = $3
		WHERE submission_id = $1 AND outcome IS NULL`, id, now, reasonAbandoned)
	if err != nil {
		return fmt.Errorf("closing the unfinished attempts of slot %d: %w", id, err)
	}
	return nil
}

// Begun is an attempt recorded before its request is sent.
type Begun struct {
	ID      int64 // compliance_attempts.id
	Attempt int   // its number for the slot
}

// BeginAttempt records, in one transaction, the attempt of kind for d with
// the redacted request, and sets the slot SENT (attempts+1) with
// next_attempt_at = reconsiderAt: if no outcome is recorded by then (a
// crash, a hang), the slot is due again as an unknown outcome. The
// transaction first checks that d is unchanged (ErrStale) and that the
// regulator has not already confirmed the slot's round
// (ErrAlreadyConfirmed); unfinished earlier attempts are closed as
// unknown. Only after it returns may the request be sent.
func (s *Store) BeginAttempt(ctx context.Context, d Due, kind string, redacted json.RawMessage, now, reconsiderAt time.Time) (Begun, error) {
	var b Begun
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockDue(ctx, tx, d, now); err != nil {
			return err
		}
		if err := abandonOpen(ctx, tx, d.ID, now); err != nil {
			return err
		}
		b.Attempt = d.Attempts + 1
		if err := tx.QueryRow(ctx, `INSERT INTO compliance_attempts (submission_id, attempt, round, kind, started_at, request)
			VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING id`,
			d.ID, b.Attempt, d.Round, kind, now, jsonOr(redacted, "null")).Scan(&b.ID); err != nil {
			return fmt.Errorf("recording attempt %d of slot %d: %w", b.Attempt, d.ID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE compliance_submissions SET status = 'SENT', attempts = $2, next_attempt_at = $3,
			updated_at = now() WHERE id = $1`, d.ID, b.Attempt, reconsiderAt); err != nil {
			return fmt.Errorf("setting slot %d SENT: %w", d.ID, err)
		}
		return nil
	})
	return b, err
}

// Policy is what FinishAttempt needs to decide a slot's next state.
type Policy struct {
	// RetryRejectedAfter and MaxAttempts are the source's.
	RetryRejectedAfter time.Duration
	MaxAttempts        int
	// Backoff returns the wait after the n-th consecutive transient
	// failure (n >= 1).
	Backoff func(n int) time.Duration
	// UnknownAfter is how long a SENT slot with an unknown outcome waits
	// before it is due again.
	UnknownAfter time.Duration
}

// Transition is a slot's next state after an outcome.
type Transition struct {
	Status      string
	NextAttempt *time.Time
	Reason      string
}

// Next decides the slot's next state after outcome o at now, given how
// many attempts of the round were rejected (this one included) and how
// many consecutive transient failures ended the round (this one included).
// It is the submitter's state machine:
//
//	confirmed         -> CONFIRMED (receipt; or a review reason without one)
//	rejected          -> REJECTED, retried after RetryRejectedAfter; terminal (no next attempt) after MaxAttempts rejections
//	rejected_terminal -> REJECTED, terminal
//	invalid           -> REJECTED, terminal (until new data arrives)
//	transient         -> ERROR, retried after Backoff(n)
//	rate_limited      -> PENDING, retried after RetryAfter (or Backoff)
//	unknown           -> SENT, due again after UnknownAfter
func (p Policy) Next(o compliance.Outcome, now time.Time, rejections, transients int) Transition {
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	switch o.Kind {
	case compliance.Confirmed:
		t := Transition{Status: StatusConfirmed, Reason: o.Reason}
		if o.Receipt == "" && t.Reason == "" {
			t.Reason = "confirmed without a receipt: needs review"
		}
		return t
	case compliance.Rejected:
		if p.MaxAttempts > 0 && rejections >= p.MaxAttempts {
			return Transition{Status: StatusRejected, Reason: fmt.Sprintf("%s (final after %d rejections)", o.Reason, rejections)}
		}
		return Transition{Status: StatusRejected, NextAttempt: at(p.RetryRejectedAfter), Reason: o.Reason}
	case compliance.RejectedTerminal, compliance.Invalid:
		return Transition{Status: StatusRejected, Reason: o.Reason}
	case compliance.RateLimited:
		d := o.RetryAfter
		if d <= 0 {
			d = p.Backoff(max(transients, 1))
		}
		return Transition{Status: StatusPending, NextAttempt: at(d), Reason: o.Reason}
	case compliance.Unknown:
		return Transition{Status: StatusSent, NextAttempt: at(p.UnknownAfter), Reason: o.Reason}
	default: // transient, and anything unclassified
		return Transition{Status: StatusError, NextAttempt: at(p.Backoff(max(transients, 1))), Reason: o.Reason}
	}
}

// maxStored caps the response text stored.
const maxStored = 64 << 10

func clip(b []byte) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if len(s) > maxStored {
		s = s[:maxStored]
	}
	return s
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// FinishAttempt records outcome o of attempt b of slot id (once) and moves
// the slot per p.Next, in one transaction, and returns the transition.
// ErrStale when the attempt already has an outcome (a replica that took
// over closed it): the slot is not touched.
func (s *Store) FinishAttempt(ctx context.Context, id int64, b Begun, o compliance.Outcome, now time.Time, p Policy) (Transition, error) {
	var tr Transition
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var round int
		var status string
		if err := tx.QueryRow(ctx, `SELECT status, round FROM compliance_submissions WHERE id = $1 FOR UPDATE`, id).
			Scan(&status, &round); err != nil {
			return fmt.Errorf("locking slot %d: %w", id, err)
		}
		tag, err := tx.Exec(ctx, `UPDATE compliance_attempts SET finished_at = $2, http_status = NULLIF($3, 0), response = $4,
				duration_ms = $5, outcome = $6, receipt = $7, error = $8
			WHERE id = $1 AND outcome IS NULL`,
			b.ID, now, o.HTTPStatus, nullable(clip(o.Response)), o.Duration.Milliseconds(), string(o.Kind),
			nullable(o.Receipt), nullable(o.Reason))
		if err != nil {
			return fmt.Errorf("recording the outcome of attempt %d of slot %d: %w", b.Attempt, id, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("attempt %d of slot %d already has an outcome: %w", b.Attempt, id, ErrStale)
		}
		if status != StatusSent {
			// A user acted meanwhile (not possible while SENT today);
			// the attempt is on record, the slot stays as it is.
			return fmt.Errorf("slot %d is %s, not SENT: %w", id, status, ErrStale)
		}
		rows, err := tx.Query(ctx, `SELECT outcome FROM compliance_attempts WHERE submission_id = $1 AND round = $2
			AND outcome IS NOT NULL ORDER BY attempt DESC`, id, round)
		if err != nil {
			return fmt.Errorf("reading the attempts of slot %d: %w", id, err)
		}
		outcomes, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("reading the attempts of slot %d: %w", id, err)
		}
		rejections, transients, trailing := 0, 0, true
		for _, oc := range outcomes {
			if oc == string(compliance.Rejected) {
				rejections++
			}
			if trailing && (oc == string(compliance.Transient) || oc == string(compliance.RateLimited)) {
				transients++
			} else {
				trailing = false
			}
		}
		tr = p.Next(o, now, rejections, transients)
		var confirmedAt *time.Time
		if tr.Status == StatusConfirmed {
			confirmedAt = &now
		}
		_, err = tx.Exec(ctx, `UPDATE compliance_submissions SET status = $2, next_attempt_at = $3, reason = $4,
				receipt = CASE WHEN $2 = 'CONFIRMED' THEN $5 ELSE receipt END, http_status = NULLIF($6, 0),
				response = $7, last_outcome = $8, confirmed_at = coalesce($9, confirmed_at), updated_at = now()
			WHERE id = $1`,
			id, tr.Status, tr.NextAttempt, nullable(tr.Reason), nullable(o.Receipt), o.HTTPStatus,
			nullable(clip(o.Response)), string(o.Kind), confirmedAt)
		if err != nil {
			return fmt.Errorf("moving slot %d to %s: %w", id, tr.Status, err)
		}
		return nil
	})
	return tr, err
}

// RecordInvalid records that d cannot be sent (Prepare refused it: the
// reason) as a finished attempt of kind invalid, never sent, and sets the
// slot REJECTED with no next attempt, in one transaction. New data
// (FillSlot with a higher version) puts it back to PENDING.
func (s *Store) RecordInvalid(ctx context.Context, d Due, reason string, now time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockDue(ctx, tx, d, now); err != nil {
			return err
		}
		if err := abandonOpen(ctx, tx, d.ID, now); err != nil {
			return err
		}
		n := d.Attempts + 1
		if _, err := tx.Exec(ctx, `INSERT INTO compliance_attempts (submission_id, attempt, round, kind, started_at,
				finished_at, outcome, error, duration_ms) VALUES ($1, $2, $3, 'invalid', $4, $4, 'invalid', $5, 0)`,
			d.ID, n, d.Round, now, reason); err != nil {
			return fmt.Errorf("recording the invalid attempt of slot %d: %w", d.ID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE compliance_submissions SET status = 'REJECTED', attempts = $2, reason = $3,
				next_attempt_at = NULL, last_outcome = 'invalid', updated_at = now() WHERE id = $1`,
			d.ID, n, "invalid: "+reason); err != nil {
			return fmt.Errorf("rejecting slot %d: %w", d.ID, err)
		}
		return nil
	})
}

// SetAside moves a SENT slot whose outcome is unknown to ERROR with no
// next attempt and reason (ReasonNeedsReview and what is known), closing
// its unfinished attempts as unknown: for a protocol that cannot detect
// duplicates, a person decides (RequestResubmission or nothing).
func (s *Store) SetAside(ctx context.Context, d Due, reason string, now time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockDue(ctx, tx, d, now); err != nil {
			return err
		}
		if err := abandonOpen(ctx, tx, d.ID, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE compliance_submissions SET status = 'ERROR', next_attempt_at = NULL, reason = $2,
				last_outcome = coalesce(last_outcome, 'unknown'), updated_at = now() WHERE id = $1`, d.ID, reason); err != nil {
			return fmt.Errorf("setting slot %d aside: %w", d.ID, err)
		}
		return nil
	})
}

// Resolve records the outcome of a verification (compliance.Verifier) of
// a SENT slot whose outcome was unknown: confirmed moves it to CONFIRMED
// with the receipt; anything else leaves it for the caller to decide.
// The unfinished attempts are closed as unknown. ErrStale as BeginAttempt.
func (s *Store) Resolve(ctx context.Context, d Due, o compliance.Outcome, now time.Time) error {
	if o.Kind != compliance.Confirmed {
		return fmt.Errorf("resolving slot %d: outcome %s does not resolve it", d.ID, o.Kind)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockDue(ctx, tx, d, now); err != nil {
			return err
		}
		if err := abandonOpen(ctx, tx, d.ID, now); err != nil {
			return err
		}
		reason := "confirmed by verification after an unknown outcome"
		if o.Receipt == "" {
			reason += ", without a receipt: needs review"
		}
		_, err := tx.Exec(ctx, `UPDATE compliance_submissions SET status = 'CONFIRMED', receipt = $2, reason = $3,
				next_attempt_at = NULL, last_outcome = 'confirmed', confirmed_at = $4, updated_at = now() WHERE id = $1`,
			d.ID, nullable(o.Receipt), reason, now)
		if err != nil {
			return fmt.Errorf("confirming slot %d: %w", d.ID, err)
		}
		return nil
	})
}

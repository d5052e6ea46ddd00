package submit

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/time/rate"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/pipeline"
)

// lockSQL takes the leader lock of one source (per schema, so test schemas
// do not contend) without waiting; unlockSQL releases it.
const (
	lockSQL   = `SELECT pg_try_advisory_lock(hashtext('stackvps.submit'), hashtext(current_schema() || '.' || $1))`
	unlockSQL = `SELECT pg_advisory_unlock(hashtext('stackvps.submit'), hashtext(current_schema() || '.' || $1))`
)

// lead competes for source's leader lock until ctx is done, and submits
// for the source while it holds it. The lock is taken on a dedicated
// connection (not from the pool) kept open while competing, and lives as
// long as that connection: when this process dies, PostgreSQL drops the
// connection and a standby takes over within lock_retry. TCP keepalives
// bound the detection of a vanished host.
func (s *Submit) lead(ctx context.Context, source string) {
	log := s.log.With("source", source)
	var conn *pgx.Conn
	closeConn := func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = conn.Close(cctx) // closing releases the lock
			conn = nil
		}
	}
	defer closeConn()
	// A standby reports 0, so "no leader" is max(leader) == 0 across
	// replicas rather than an absent series.
	s.met.leader.WithLabelValues(source).Set(0)
	for ctx.Err() == nil {
		if conn == nil {
			var err error
			if conn, err = s.lockConn(ctx); err != nil {
				if ctx.Err() == nil {
					log.Warn("connecting for the leader lock", "err", err)
				}
				sleep(ctx, s.cfg.LockRetry.Std())
				continue
			}
		}
		var held bool
		if err := conn.QueryRow(ctx, lockSQL, source).Scan(&held); err != nil {
			if ctx.Err() == nil {
				log.Warn("taking the leader lock", "err", err)
			}
			closeConn()
			sleep(ctx, s.cfg.LockRetry.Std())
			continue
		}
		if held {
			log.Info("leader for source: submitting")
			s.met.leader.WithLabelValues(source).Set(1)
			lost := s.whileHeld(ctx, conn, source)
			s.met.leader.WithLabelValues(source).Set(0)
			log.Info("leadership for source ended", "connection_lost", lost)
			if lost || ctx.Err() != nil {
				closeConn()
			} else if _, err := conn.Exec(ctx, unlockSQL, source); err != nil {
				closeConn()
			}
		}
		sleep(ctx, s.cfg.LockRetry.Std())
	}
}

// lockConn opens the dedicated connection of a leader lock.
func (s *Submit) lockConn(ctx context.Context) (*pgx.Conn, error) {
	cc := s.deps.Store.Pool().Config().ConnConfig.Copy()
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["application_name"] = "stackvps-submit-leader"
	cc.RuntimeParams["tcp_keepalives_idle"] = "5"
	cc.RuntimeParams["tcp_keepalives_interval"] = "2"
	cc.RuntimeParams["tcp_keepalives_count"] = "3"
	return pgx.ConnectConfig(ctx, cc)
}

// whileHeld submits for source while its lock is held on conn, until ctx
// is done or conn is found dead (pinged every lock_retry): then
// submissions stop at once. It reports whether the connection was lost.
func (s *Submit) whileHeld(ctx context.Context, conn *pgx.Conn, source string) bool {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve(lctx, source)
	}()
	t := time.NewTicker(s.cfg.LockRetry.Std())
	defer t.Stop()
	for {
		select {
		case <-done:
			return false
		case <-t.C:
			pctx, pcancel := context.WithTimeout(lctx, s.cfg.LockRetry.Std())
			err := conn.Ping(pctx)
			pcancel()
			if err != nil && lctx.Err() == nil {
				s.log.Error("leader lock connection lost: stopping submissions", "source", source, "err", err)
				cancel()
				<-done
				return true
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// serve submits the due slots of source, oldest first, until ctx is done.
func (s *Submit) serve(ctx context.Context, source string) {
	log := s.log.With("source", source)
	wake := s.wakeChan(source)
	var limiter *rate.Limiter
	var limitEvery time.Duration
	var pausedUntil time.Time
	backoff := pipeline.Backoff{Initial: time.Second, Max: s.cfg.PollInterval.Std() * 4}
	failures := 0
	for ctx.Err() == nil {
		if d := pausedUntil.Sub(s.now()); d > 0 {
			log.Info("source paused by the regulator's rate limit", "for", d)
			sleep(ctx, d)
			continue
		}
		src, err := s.deps.Store.Source(ctx, source)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("reading the source", "err", err)
				sleep(ctx, backoff.Delay(failures))
				failures++
			}
			continue
		}
		proto, ok := s.deps.Protocols[src.Protocol]
		if !src.Active || !ok {
			if !ok {
				log.Error("no client for the source's protocol: not submitting", "protocol", src.Protocol)
			}
			s.idle(ctx, wake)
			continue
		}
		if limiter == nil || limitEvery != src.MinInterval {
			limitEvery = src.MinInterval
			limiter = rate.NewLimiter(rate.Inf, 1)
			if limitEvery > 0 {
				limiter = rate.NewLimiter(rate.Every(limitEvery), 1)
			}
		}
		due, err := s.deps.Store.DueSlots(ctx, source, s.now(), s.cfg.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("reading due slots", "err", err)
				sleep(ctx, backoff.Delay(failures))
				failures++
			}
			continue
		}
		failures = 0
		for _, d := range due {
			if ctx.Err() != nil {
				return
			}
			if pause := s.handle(ctx, src, proto, limiter, d); pause > 0 {
				pausedUntil = s.now().Add(pause)
				break
			}
		}
		s.met.passes.WithLabelValues(source).Inc()
		if len(due) == 0 {
			s.idle(ctx, wake)
		}
	}
}

// idle waits for the poll interval or a wake-up.
func (s *Submit) idle(ctx context.Context, wake <-chan struct{}) {
	t := time.NewTimer(s.cfg.PollInterval.Std())
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
	case <-t.C:
	}
}

// DetectsDuplicates is implemented by protocols that can say whether
// their regulator recognises a resent measurement (answering with the
// original receipt instead of storing it twice).
type DetectsDuplicates interface {
	DetectsDuplicates() bool
}

// detectsDuplicates reports whether a slot of src whose outcome is
// unknown may be sent again: DGA answers a repeated (obra, fecha, hora)
// with the original comprobante; SMA's behaviour is unconfirmed, so no.
func detectsDuplicates(src compliance.Source, proto compliance.Protocol) bool {
	if d, ok := proto.(DetectsDuplicates); ok {
		return d.DetectsDuplicates()
	}
	return src.Protocol == compliance.ProtocolDGA
}

// finishTimeout bounds recording an outcome after ctx was cancelled.
const finishTimeout = 10 * time.Second

// handle acts on one due slot and returns how long the whole source must
// pause (a rate limit), or 0.
func (s *Submit) handle(ctx context.Context, src compliance.Source, proto compliance.Protocol, limiter *rate.Limiter, d store.Due) time.Duration {
	log := s.log.With("source", src.Code, "slot_id", d.ID, "point", d.Point, "slot", d.SlotAt, "kind", d.Kind)
	st := s.deps.Store
	creds, err := st.OpenCredentials(d.Sealed)
	if err != nil {
		// The key changed or the data is damaged: nothing can be sent until
		// a person fixes the config, then resubmits.
		log.Error("credentials cannot be opened: rejecting the slot locally", "err", err)
		if err := st.RecordInvalid(ctx, d, "credentials cannot be opened: "+err.Error(), s.now()); err != nil && ctx.Err() == nil {
			log.Warn("recording the slot as invalid", "err", err)
		}
		s.met.attempts.WithLabelValues(src.Code, string(compliance.Invalid)).Inc()
		return 0
	}
	slot := d.Slot(creds)
	if d.Kind == store.KindResendAfterUnknown && !detectsDuplicates(src, proto) {
		if v, ok := proto.(compliance.Verifier); ok {
			o := v.Verify(ctx, src, slot, d.Receipt)
			if o.Kind == compliance.Confirmed {
				if err := st.Resolve(ctx, d, o, s.now()); err != nil {
					log.Warn("recording the verification", "err", err)
					return 0
				}
				s.met.attempts.WithLabelValues(src.Code, "resolved").Inc()
				log.Info("unknown outcome resolved by verification", "receipt", o.Receipt)
				return 0
			}
		}
		reason := store.ReasonNeedsReview
		if d.Reason != "" {
			reason += ": " + d.Reason
		}
		if err := st.SetAside(ctx, d, reason, s.now()); err != nil {
			if ctx.Err() == nil {
				log.Warn("setting the slot aside", "err", err)
			}
			return 0
		}
		s.met.attempts.WithLabelValues(src.Code, "set_aside").Inc()
		log.Warn("outcome unknown and the regulator cannot detect duplicates: set aside for review")
		return 0
	}
	req, err := proto.Prepare(ctx, src, slot, s.now())
	if errors.Is(err, compliance.ErrInvalid) {
		if err := st.RecordInvalid(ctx, d, err.Error(), s.now()); err != nil {
			if ctx.Err() == nil {
				log.Warn("recording the slot as invalid", "err", err)
			}
			return 0
		}
		s.met.attempts.WithLabelValues(src.Code, string(compliance.Invalid)).Inc()
		log.Warn("slot refused locally: not sent", "reason", err)
		return 0
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("preparing the request", "err", err)
		}
		return 0
	}
	if err := limiter.Wait(ctx); err != nil {
		return 0
	}
	now := s.now()
	reconsider := max(s.cfg.UnknownAfter.Std(), 2*src.RequestTimeout)
	b, err := st.BeginAttempt(ctx, d, d.Kind, req.Redacted, now, now.Add(reconsider))
	switch {
	case errors.Is(err, store.ErrAlreadyConfirmed):
		log.Warn("an attempt already confirmed this slot: not sending again")
		return 0
	case errors.Is(err, store.ErrStale):
		log.Debug("slot changed meanwhile: skipped", "err", err)
		return 0
	case err != nil:
		if ctx.Err() == nil {
			log.Warn("recording the attempt", "err", err)
		}
		return 0
	}
	// From here the request goes out and its outcome is recorded even if
	// ctx is cancelled (graceful shutdown): Send is bounded by the source's
	// request timeout.
	wctx := context.WithoutCancel(ctx)
	o := proto.Send(wctx, src, slot, req)
	s.met.latency.WithLabelValues(src.Code).Observe(o.Duration.Seconds())
	fctx, cancel := context.WithTimeout(wctx, finishTimeout)
	defer cancel()
	tr, err := st.FinishAttempt(fctx, d.ID, b, o, s.now(), s.policy(src))
	if err != nil {
		// The attempt stays open: after unknown_after the slot is due again
		// as an unknown outcome.
		log.Error("recording the outcome", "outcome", o.Kind, "receipt", o.Receipt, "err", err)
		return 0
	}
	s.met.attempts.WithLabelValues(src.Code, string(o.Kind)).Inc()
	lvl := map[compliance.OutcomeKind]func(string, ...any){compliance.Confirmed: log.Info, compliance.Unknown: log.Warn,
		compliance.Transient: log.Warn, compliance.RateLimited: log.Warn, compliance.Rejected: log.Warn,
		compliance.RejectedTerminal: log.Error}[o.Kind]
	if lvl == nil {
		lvl = log.Warn
	}
	lvl("submission attempt", "attempt", b.Attempt, "outcome", o.Kind, "http_status", o.HTTPStatus, "receipt", o.Receipt,
		"reason", o.Reason, "status", tr.Status, "next_attempt_at", tr.NextAttempt, "duration_ms", o.Duration.Milliseconds())
	if o.Kind == compliance.RateLimited && tr.NextAttempt != nil {
		return tr.NextAttempt.Sub(s.now())
	}
	return 0
}

// policy is the state machine's parameters for src.
func (s *Submit) policy(src compliance.Source) store.Policy {
	bo := pipeline.Backoff{Initial: s.cfg.BackoffInitial.Std(), Max: s.cfg.BackoffMax.Std()}
	return store.Policy{
		RetryRejectedAfter: src.RetryRejectedAfter,
		MaxAttempts:        src.MaxAttempts,
		Backoff:            func(n int) time.Duration { return bo.Delay(n - 1) },
		UnknownAfter:       max(s.cfg.UnknownAfter.Std(), 2*src.RequestTimeout),
	}
}

package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Run delivers the queued rows until ctx is done: each channel has
// notify.concurrency workers of its own, so a channel that is down (its
// attempts time out or fail) never holds up another. A worker claims one
// due row at a time (FOR UPDATE SKIP LOCKED, so replicas share the queue),
// commits it as "sending" with the attempt counted, makes the external call,
// then records sent, a retry (queued again after a backoff) or failed.
// When ctx ends, the workers stop claiming and finish the attempts in
// progress (each bounded by its channel's timeout), so a clean stop leaves
// no row "sending". Run returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	n.log.Info("notify dispatcher started", "channels", Channels, "concurrency", n.cfg.Concurrency,
		"max_attempts", n.cfg.MaxAttempts)
	var wg sync.WaitGroup
	for _, ch := range Channels {
		for range n.cfg.Concurrency {
			wg.Go(func() { n.worker(ctx, ch) })
		}
	}
	wg.Go(func() { n.housekeep(ctx) })
	wg.Wait()
	n.log.Info("notify dispatcher stopped")
	return nil
}

// housekeep wakes every channel each poll interval (retries come due,
// other replicas queue rows), fails the rows whose attempts are used up,
// and counts the queue.
func (n *Notifier) housekeep(ctx context.Context) {
	t := time.NewTicker(n.cfg.PollInterval.Std())
	defer t.Stop()
	var lastCount time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, ch := range Channels {
			n.poke(ch)
		}
		if err := n.sweep(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("failing exhausted deliveries", "err", err)
		}
		if time.Since(lastCount) >= 5*time.Second {
			lastCount = time.Now()
			if err := n.countQueue(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("counting the delivery queue", "err", err)
			}
		}
	}
}

// worker delivers rows of channel ch, one at a time.
func (n *Notifier) worker(ctx context.Context, ch string) {
	failures := 0
	for ctx.Err() == nil {
		d, ok, err := n.claim(ctx, ch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failures%10 == 0 {
				n.log.Warn("claiming a delivery", "channel", ch, "err", err)
			}
			failures++
			_ = n.backoff.Wait(ctx, min(failures, 3)-1)
			continue
		}
		failures = 0
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-n.wake[ch]:
			}
			continue
		}
		// There may be more due: let an idle sibling look.
		n.poke(ch)
		n.deliver(ctx, ch, d)
	}
}

// claim takes the oldest due row of channel ch: queued and due, or left
// "sending" by a replica whose claim expired. The row is committed as
// "sending", attempts counted, before anything is sent.
func (n *Notifier) claim(ctx context.Context, ch string) (Delivery, bool, error) {
	d := Delivery{Channel: ch}
	var prev string
	err := n.pool.QueryRow(ctx, `WITH c AS (
			SELECT notification_id, channel, status FROM notification_deliveries
			WHERE channel = $1 AND status IN ('queued', 'sending') AND next_attempt_at <= now() AND attempts < $3
			ORDER BY next_attempt_at
			LIMIT 1
			FOR UPDATE SKIP LOCKED)
		UPDATE notification_deliveries d
		SET status = 'sending', attempts = d.attempts + 1,
			next_attempt_at = now() + $2 * interval '1 millisecond', updated_at = now()
		FROM c
		WHERE d.notification_id = c.notification_id AND d.channel = c.channel
		RETURNING d.notification_id, d.user_id, coalesce(d.point, ''), d.type, d.severity, d.language,
			d.destination, d.subject, d.body, d.payload, d.attempts, c.status, d.notification_created_at`,
		ch, n.cfg.ClaimTimeout.Std().Milliseconds(), n.cfg.MaxAttempts).Scan(
		&d.NotificationID, &d.UserID, &d.Point, &d.Type, &d.Severity, &d.Language, &d.Destination,
		&d.Subject, &d.Body, &d.Payload, &d.Attempt, &prev, &d.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, false, nil
	}
	if err != nil {
		return Delivery{}, false, fmt.Errorf("claiming a %s delivery: %w", ch, err)
	}
	d.Reclaimed = prev == "sending"
	return d, true, nil
}

// deliver makes one attempt and records its outcome. The attempt outlives
// ctx (bounded by the claim timeout): an attempt started is finished and
// recorded, so a clean shutdown leaves nothing ambiguous.
func (n *Notifier) deliver(ctx context.Context, ch string, d Delivery) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ClaimTimeout.Std())
	defer cancel()
	n.met.inFlight.WithLabelValues(ch).Inc()
	defer n.met.inFlight.WithLabelValues(ch).Dec()
	if d.Attempt > 1 {
		n.met.retries.WithLabelValues(ch).Inc()
	}
	log := n.log.With("notification_id", d.NotificationID, "channel", ch, "attempt", d.Attempt)
	if d.Reclaimed {
		n.met.reclaimed.WithLabelValues(ch).Inc()
		log.Warn("resending a delivery whose sender stopped mid-send; the receiver may have it already (same idempotency key)")
	}
	start := time.Now()
	if ch == ChannelInApp {
		err := pgx.BeginFunc(sctx, n.pool, func(tx pgx.Tx) error {
			id, err := n.inApp.SendTx(sctx, tx, d)
			if err != nil {
				return err
			}
			return n.markSent(sctx, tx, d, id)
		})
		n.met.sendSeconds.WithLabelValues(ch).Observe(time.Since(start).Seconds())
		if err == nil {
			n.sent(log, d)
			return
		}
		n.finish(sctx, log, d, err)
		return
	}
	providerID, err := n.senders[ch].Send(sctx, d)
	n.met.sendSeconds.WithLabelValues(ch).Observe(time.Since(start).Seconds())
	if err == nil {
		err = n.retryDB(sctx, func(ctx context.Context) error { return n.markSent(ctx, n.pool, d, providerID) })
		if err != nil {
			// Sent, but not recorded: the claim expires and the message
			// goes again with the same idempotency key.
			log.Error("delivered but could not record it; it will be resent with the same idempotency key", "err", err)
			return
		}
		n.sent(log, d)
		return
	}
	n.finish(sctx, log, d, err)
}

func (n *Notifier) sent(log *slog.Logger, d Delivery) {
	n.met.deliveries.WithLabelValues(d.Channel, "sent").Inc()
	if !d.CreatedAt.IsZero() {
		n.met.latency.WithLabelValues(d.Channel).Observe(time.Since(d.CreatedAt).Seconds())
	}
	log.Debug("delivered")
}

// dbExec is a pool or a transaction.
type dbExec interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// markSent records a successful attempt, fenced on the attempt number: if
// the claim expired and another replica took the row, its attempt owns it.
func (n *Notifier) markSent(ctx context.Context, db dbExec, d Delivery, providerID string) error {
	_, err := db.Exec(ctx, `UPDATE notification_deliveries
		SET status = 'sent', sent_at = now(), provider_id = NULLIF($4, ''), last_error = NULL, updated_at = now()
		WHERE notification_id = $1 AND channel = $2 AND attempts = $3 AND status = 'sending'`,
		d.NotificationID, d.Channel, d.Attempt, providerID)
	if err != nil {
		return fmt.Errorf("recording the %s delivery of %s as sent: %w", d.Channel, d.NotificationID, err)
	}
	return nil
}

// finish records a failed attempt: failed for good when the error is
// permanent or the attempts are used up, else queued again after the
// backoff (at least the receiver's Retry-After).
func (n *Notifier) finish(ctx context.Context, log *slog.Logger, d Delivery, sendErr error) {
	reason := truncate(redact(sendErr.Error()), 1000)
	if IsPermanent(sendErr) || d.Attempt >= n.cfg.MaxAttempts {
		if !IsPermanent(sendErr) {
			reason = fmt.Sprintf("gave up after %d attempts (notify.max_attempts): %s", d.Attempt, reason)
		}
		err := n.retryDB(ctx, func(ctx context.Context) error {
			_, err := n.pool.Exec(ctx, `UPDATE notification_deliveries
				SET status = 'failed', last_error = $4, updated_at = now()
				WHERE notification_id = $1 AND channel = $2 AND attempts = $3 AND status = 'sending'`,
				d.NotificationID, d.Channel, d.Attempt, reason)
			return err
		})
		if err != nil {
			log.Error("could not record a failed delivery; it will be retried when its claim expires", "err", err)
			return
		}
		n.met.deliveries.WithLabelValues(d.Channel, "failed").Inc()
		log.Warn("delivery failed", "reason", reason)
		return
	}
	delay := n.backoff.Delay(d.Attempt - 1)
	if ra := retryAfter(sendErr); ra > delay {
		delay = min(ra, n.cfg.RetryMax.Std())
	}
	err := n.retryDB(ctx, func(ctx context.Context) error {
		_, err := n.pool.Exec(ctx, `UPDATE notification_deliveries
			SET status = 'queued', last_error = $4, next_attempt_at = now() + $5 * interval '1 millisecond', updated_at = now()
			WHERE notification_id = $1 AND channel = $2 AND attempts = $3 AND status = 'sending'`,
			d.NotificationID, d.Channel, d.Attempt, reason, delay.Milliseconds())
		return err
	})
	if err != nil {
		log.Error("could not record a failed attempt; it will be retried when its claim expires", "err", err)
		return
	}
	n.met.deliveries.WithLabelValues(d.Channel, "retry").Inc()
	log.Info("delivery attempt failed; retrying", "reason", reason, "retry_in", delay.Round(time.Millisecond))
}

// retryDB retries a database write a few times: the outcome of an attempt
// already made is worth keeping.
func (n *Notifier) retryDB(ctx context.Context, f func(context.Context) error) error {
	var err error
	for i := range 5 {
		if err = f(ctx); err == nil || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(time.Duration(100<<i) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

// sweep fails the rows whose attempts are used up: a row left "sending" by
// a stopped replica at its last attempt (its outcome is unknown), or queued
// rows after notify.max_attempts was lowered.
func (n *Notifier) sweep(ctx context.Context) error {
	rows, err := n.pool.Query(ctx, `UPDATE notification_deliveries
		SET status = 'failed', updated_at = now(), last_error = CASE WHEN status = 'sending'
			THEN 'attempt ' || attempts || ' of ' || $1 || ' has an unknown outcome (the sender stopped mid-send); no attempts left (notify.max_attempts)'
			ELSE coalesce(last_error || '; ', '') || 'no attempts left (notify.max_attempts)' END
		WHERE status IN ('queued', 'sending') AND attempts >= $1 AND next_attempt_at <= now()
		RETURNING notification_id, channel`, n.cfg.MaxAttempts)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, ch string
		if err := rows.Scan(&id, &ch); err != nil {
			return err
		}
		n.met.deliveries.WithLabelValues(ch, "failed").Inc()
		n.log.Warn("delivery failed: attempts used up", "notification_id", id, "channel", ch)
	}
	return rows.Err()
}

// countQueue sets the queue depth gauges.
func (n *Notifier) countQueue(ctx context.Context) error {
	rows, err := n.pool.Query(ctx, `SELECT channel, status, count(*) FROM notification_deliveries
		WHERE status IN ('queued', 'sending') GROUP BY channel, status`)
	if err != nil {
		return err
	}
	defer rows.Close()
	counts := map[[2]string]float64{}
	for rows.Next() {
		var ch, st string
		var c int64
		if err := rows.Scan(&ch, &st, &c); err != nil {
			return err
		}
		counts[[2]string{ch, st}] = float64(c)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, ch := range Channels {
		for _, st := range []string{"queued", "sending"} {
			n.met.queue.WithLabelValues(ch, st).Set(counts[[2]string{ch, st}])
		}
	}
	return nil
}

var (
	emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+\.[A-Za-z0-9.-]+)`)
	phonePattern = regexp.MustCompile(`\+[1-9][0-9]{2,10}([0-9]{4})\b`)
)

// redact masks email addresses and phone numbers a receiver's answer may
// quote, before the reason goes to logs and last_error: the domain and the
// last four digits are enough to tell them apart.
func redact(s string) string {
	s = emailPattern.ReplaceAllString(s, "***@$1")
	return phonePattern.ReplaceAllString(s, "+***$1")
}

func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	s = s[:limit]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// Package notify is the notifications -> people stage: it consumes topic
// notifications (Avro Notification, one per recipient user, keyed by user
// id) and delivers each notification on the channels the user chose for the
// point: email over SMTP, SMS through an HTTP provider API, a signed webhook,
// and the in-app inbox the API lists.
//
// # Queueing
//
// [Notifier.Process] resolves the user's channels (point_notifications of
// the point: channels, webhook_url, phone, language; users.email; a
// notification about no point, such as system or daily_report to
// administrators, goes to in_app, and to email when notify.email.host is
// set), renders the type's template in
// the user's language, and inserts one notification_deliveries row per
// channel in one transaction, ON CONFLICT DO NOTHING on (notification id,
// channel). The runtime commits the Kafka offset only after Process
// returned, so consumption is at-least-once and a replay queues nothing
// twice.
//
// # Delivering
//
// [Notifier.Run] runs notify.concurrency workers per channel. A worker
// claims one due row (FOR UPDATE SKIP LOCKED), commits it as "sending" with
// the attempt counted and a claim that expires after notify.claim_timeout,
// makes the external call, and records "sent" (with the receiver's message
// id), a retry ("queued" again after capped exponential backoff with
// jitter, at least the receiver's Retry-After) or "failed" with the reason
// (a permanent refusal, or notify.max_attempts used up). Channels never
// share workers, so an SMTP server that is down delays only email.
//
// # What "once per channel" means
//
// A row found "sending" after its claim expired belongs to a process that
// died mid-send: whether the receiver got the message is unknown. Such a row
// is sent again, carrying the same idempotency key, and counted in
// stackvps_notify_reclaimed_total:
//
//   - in_app is exactly once: the inbox row and "sent" are one transaction,
//     and UNIQUE (user_id, notification_id) refuses a second row.
//   - webhook: the resend carries the same Idempotency-Key header (the
//     notification id); a receiver that remembers the keys it processed
//     sees each notification once. Without that, at-least-once.
//   - SMS: the same Idempotency-Key header and body reference; once with a
//     provider that honours either, else at-least-once.
//   - email: the same Message-ID and Date, derived from the notification
//     id; mail systems that deduplicate on Message-ID show it once. SMTP has
//     no idempotency, so this is at-least-once with a stable Message-ID.
//
// Only a crash between the external call and the "sent" commit can cause a
// resend; a clean shutdown finishes the attempts in progress first.
//
// # Templates
//
// templates/<language>/<type>.tmpl (text/template) define "subject",
// "body" and "sms" for every type in [Types] and every language in
// [Languages]; they see a [View]: the point's catchment_points.name, the
// variable, the value with its unit, the time in the point's zone.
package notify

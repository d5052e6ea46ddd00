// Package submit is the compliance.records -> regulators stage: it fills
// the reporting slots of every point's compliance configs from the hourly
// compliance records and submits each slot to its regulator (DGA, SMA)
// exactly once, on time, with a receipt, keeping every attempt on record
// (issue #5).
//
// # Filling slots
//
// The Processor consumes compliance.records (source "hourly", one record
// per point and hour, the highest version wins; see stages/aggregate). The
// slot instant of a record is its period_end. For each active config of
// the record's point (its source active, its dates covering the instant in
// the source's zone) whose frequency has a slot at that instant
// (compliance.IsSlot in the source's zone: every hour, or 00:00 for daily,
// day 1 for monthly, 1 Jan/1 Jul for semiannual), it takes the values (see
// Values: value_mode instant takes the record's flow and level when the
// record itself is instant; mean takes the hour-stats avg; the totalizer is
// always the record's, the counter at the slot instant), keeps only the
// source's variables and calls store.FillSlot, which keeps the highest
// version and never changes data already sent (a higher version after
// SENT or CONFIRMED is kept as a correction, sent only if a user requests
// a resubmission). FillSlot is idempotent, so consuming a record twice
// (at-least-once delivery, a replay) changes nothing. The processor
// produces nothing; its offsets are committed after the fills.
//
// Slot maintenance (every submit.maintain_interval) creates PENDING slots
// ahead (submit.slots_ahead) for every active config, back to its start
// date but no further than submit.write_off_after, so a slot without data
// exists as a row (alerts count "missing": PENDING, no data, older than
// submit.missing_after); slots still without data after
// submit.write_off_after become MISSING. It also refreshes the gauges.
//
// A slot can miss its record: the config was created (or its dates widened)
// after the records of its past slots went by, or the aggregate refused the
// readings as too late. Maintenance therefore looks a slot still without
// data submit.backfill_after past its instant up in the readings table
// (store.BackfillFromReadings: the aggregate's rule, only once the point has
// a reading after the slot's minute; version 0, so a record arriving before
// the slot is sent replaces the values), and again that often while it
// stays empty. Nothing is fabricated: a slot without readings stays empty.
//
// # Submitting
//
// One submitter loop runs per source in every replica, but only the holder
// of the source's leader lock submits: a PostgreSQL advisory lock taken
// with pg_try_advisory_lock on a dedicated connection (not from the pool)
// and held as long as that connection lives. So replicas never submit for
// the same source at once, and the per-source rate limit
// (golang.org/x/time/rate, the source's min_interval) holds globally. When
// the holder dies its connection drops, PostgreSQL releases the lock and a
// standby takes it within submit.lock_retry (TCP keepalives bound the
// detection of a vanished host); a holder that finds its lock connection
// dead stops submitting at once.
//
// The leader reads the due slots oldest first (backfill in chronological
// order, store.DueSlots): PENDING with data; ERROR and REJECTED whose
// next_attempt_at has come (transient failures back off exponentially with
// jitter between submit.backoff_initial and submit.backoff_max; a rejection
// waits the source's retry_rejected_after, daily for DGA, until
// max_attempts rejections make it final); and SENT whose next_attempt_at,
// the unknown-outcome deadline (submit.unknown_after, never less than
// twice the source's request timeout), has come. For each:
//
//  1. Prepare formats and validates the request. compliance.ErrInvalid:
//     the slot is REJECTED locally with the reason and an attempt of kind
//     invalid is recorded; nothing is sent.
//  2. In ONE transaction (store.BeginAttempt): lock the slot row, check it
//     is still as read (else skip: another replica or a user moved it),
//     check that no attempt of its round returned confirmed (if one did,
//     the slot is set CONFIRMED and never sent again), close any unfinished
//     attempt as unknown ("abandoned"), insert the attempt row with the
//     redacted request, set the slot SENT, attempts+1, next_attempt_at =
//     the unknown-outcome deadline. COMMIT.
//  3. Send the request (bounded by the source's request timeout; a
//     graceful shutdown lets it finish).
//  4. In ONE transaction (store.FinishAttempt): fill the attempt's outcome
//     (once: the table's trigger refuses any other change) and move the
//     slot (store.Policy.Next): confirmed -> CONFIRMED with the receipt
//     (or a review reason when the regulator gave none); rejected ->
//     REJECTED, retried after retry_rejected_after, final after
//     max_attempts; rejected_terminal -> REJECTED for good; transient ->
//     ERROR with backoff; rate_limited -> PENDING after Retry-After, and
//     the whole source pauses that long; unknown -> stays SENT until the
//     deadline.
//
// A SENT slot past its deadline is resent as a resend_after_unknown
// attempt only when the protocol's regulator detects duplicates: DGA
// answers a repeated (obra, fecha, hora) with 400 "Ya existe ...
// Comprobante: X", which compliance classifies as confirmed with the
// original receipt, so the regulator stores the measurement once whatever
// happened to the first request. For a protocol without duplicate
// detection (SMA: unconfirmed) the slot is never resent blindly: it is
// verified when the protocol can (compliance.Verifier) and otherwise set
// aside, ERROR without next attempt, reason "outcome unknown: needs
// review", for a person to check and, if needed, request a resubmission
// (store.RequestResubmission: one more round, audited).
//
// # kill -9, state by state
//
// Every state change is one transaction, and the request is sent only
// between the two transactions of an attempt, so a crash (kill -9, power
// loss, a lost database connection) at any instant leaves one of these:
//
//   - Before BeginAttempt commits: the slot is as it was (PENDING, ERROR,
//     REJECTED or SENT) and nothing was sent for this attempt. The next
//     leader picks it up as before. Nothing lost, nothing duplicated.
//   - After BeginAttempt commits, before or during Send: the slot is SENT
//     with an unfinished attempt and a deadline. The request may or may
//     not have reached the regulator. No replica touches the slot before
//     the deadline (so a request still in flight from the dead process
//     cannot race a resend). After it, DGA: resent; if the first request
//     was stored, the answer is the duplicate with the original receipt
//     (confirmed, the regulator's count stays 1), otherwise it is stored
//     now; the unfinished attempt is closed as unknown/abandoned in the
//     same transaction as the new one is opened. SMA: set aside for review,
//     never sent twice without a person.
//   - After Send, before FinishAttempt commits: as above: the outcome is
//     lost with the process, the slot is SENT with an unfinished attempt,
//     and the deadline path recovers it without a second acceptance.
//   - After FinishAttempt commits: the outcome and the slot's state are
//     recorded together; nothing to recover.
//
// And for the other writers:
//
//   - FillSlot is one transaction (upsert, then update under the row
//     lock): after a crash the record is consumed again (offsets are
//     committed after processing) and the fill is repeated or is stale.
//   - RecordInvalid, SetAside and Resolve are single transactions guarded
//     like BeginAttempt.
//   - A slot is never forgotten: every non-final state (PENDING with data,
//     ERROR or REJECTED with a next attempt, SENT) has a next_attempt_at
//     or none-and-data that DueSlots selects; only CONFIRMED, REJECTED or
//     ERROR without a next attempt (final, or set aside with a reason) and
//     MISSING are left alone, and those are visible to alerts and the API.
//
// TestKillIntegration checks this: submitter processes are SIGKILLed at
// random moments against the reference regulator with hang-after-accept,
// slow and failing answers; afterwards every slot is CONFIRMED with the
// receipt of its one acceptance, the regulator accepted no slot twice and
// every attempt has its outcome.
//
// The guarantees assume the leader lock: if two processes submitted for one
// source at once (a partition that leaves a dead-looking holder sending),
// the row locks and state checks of BeginAttempt still prevent two
// concurrent attempts of one slot from the same state, and the deadline
// (at least twice the request timeout) keeps a takeover from resending a
// request still in flight.
//
// # Metrics
//
// stackvps_submit_records_total{outcome}, slots_filled_total{source,result},
// attempts_total{source,outcome}, request_duration_seconds{source},
// slots{source,status}, oldest_pending_age_seconds{source}, leader{source},
// slots_created_total, slots_written_off_total, maintenance_errors_total;
// the pipeline runtime adds its per-stage metrics for the Kafka side.
package submit

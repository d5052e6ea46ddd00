// Package alert is the telemetry.readings -> notifications stage: it judges
// the alert rules of package alerts (table alert_rules) against every
// reading and, every alert.evaluate_interval, against the clock and the
// compliance slots, keeps the alerts' lifecycle in the database, and
// produces one Notification per subscribed user for every event.
//
// # Rules
//
// Judged on each reading of the rule's point and variable, in event-time
// order (a reading not newer than the series' newest is late: it counts as
// an arrival for data gaps and is otherwise ignored):
//   - threshold_above / threshold_below: fires while value > limit (value <
//     limit); clears at value <= limit - deadband (>= limit + deadband);
//     inside the deadband the state stays.
//   - rate_of_change: |value - previous| / minutes between their event
//     times > max_per_minute fires; a rate within it clears.
//   - stuck: the flat run is the readings since the latest one that fell
//     outside tolerance of the run (max - min <= tolerance, the smallest
//     tolerance of the variable's stuck rules); it fires once the run holds
//     two readings or more spanning at least window, and clears when a
//     value leaves the band (a new run starts at that reading).
//   - totalizer_reset: fires on a reading flagged reset (quality bit 8,
//     stages/normalize) or lower than the previous one without the rollover
//     flag (bit 4); clears with the first reading at least clear_after
//     (event time) after the last reset.
//
// Judged periodically:
//   - data_gap (below).
//   - compliance_missing: fires while the point has compliance_submissions
//     rows with status PENDING, data NULL and slot_at < now - after
//     (params.after, default submit.missing_after); the value is
//     their count.
//   - compliance_rejected: fires while the point has rows REJECTED changed
//     within params.within (default 7 days).
//
// While compliance_submissions does not exist (migration 0006 not
// applied), compliance rules are skipped with a debug log.
//
// # Data gaps and back-pressure
//
// Every input partition keeps an arrival clock, the latest received_at it
// consumed, and each series (point, variable) the latest received_at of its
// readings. Arrivals, not event times, so a device whose clock is wrong
// does not cry wolf. At each evaluation, for each partition:
//   - lagging: it yielded a record within alert.idle_after and its arrival
//     clock is more than alert.lag_tolerance behind the processing clock:
//     the consumer lag in time, end to end (what it delivers was received
//     that long ago; the lag of upstream stages counts too). Record
//     timestamps are not used: normalize stamps readings with their event
//     time. Its gaps are not judged at all (counted in
//     stackvps_alert_gap_checks_skipped_total{reason="lagging"}); open gap
//     alerts stay as they are.
//   - caught up (idle): it yielded nothing for alert.idle_after while the
//     stage kept polling, and Kafka answers a ping. Its clock is the
//     processing time.
//   - otherwise (records flowing, fresh): its clock is the arrival clock.
//
// A series fires when clock - last arrival > params.after, and resolves
// with its next reading (or an evaluation that finds the gap closed). So a
// stage catching up on a backlog, or cut off from Kafka, judges no gap on
// time it has not seen: the exact rule is
//
//	gap = clock - last_arrival(series), judged only when the partition is not lagging,
//	clock = processing time if the partition is idle and Kafka answers, else arrival clock.
//
// Series of data_gap points not seen since the stage started (it
// restarted, or the sensor is already silent) are seeded from the readings
// table (the latest stored reading time, found by a loose index scan) and
// judged on the processing clock only when no partition lags, Kafka
// answers and the stage has run for idle_after; the stored time is read
// again before each judgement, so a replica that does not own the series
// sees what the owner's sink stored. Upstream lag is seen only when it
// delays everything a partition delivers: when normalize lags on some raw
// partitions only, the readings of the others keep the arrival clock fresh
// and the delayed series may look silent (the hourly health check reports
// that lag).
//
// # State and restarts
//
// The alert lifecycle is in the database (package alerts): an alert is
// unique per rule and variable while unresolved, so a restart, a replay of
// uncommitted readings or a second replica never opens an alert twice, and
// re-notification is decided by last_notified_at in the row, so a restart
// does not re-notify early. The stage caches the unresolved alerts and the
// active rules, reloaded at start and every evaluation (rule changes made
// through the API take effect within alert.evaluate_interval), and goes to
// the database only when a judgement may change something. The database
// write locks the rule and checks it is unchanged, so a stale cached rule
// (deleted, deactivated, changed) never opens an alert; the stage then
// reloads its rules at once.
//
// The per-reading memory (previous value, flat run, arrivals) is per
// partition and rebuilt, for a series first seen after a start or a
// rebalance, from the readings table: the stored readings of the longest
// stuck window (at least an hour) before the first reading consumed, so
// rate of change, stuck and reset are judged from the second reading on as
// if the stage had never stopped (as far as the sink has stored them). A
// reading's effect on the memory is applied only after its judgements are
// stored, so a transient database error retries it exactly.
//
// # Notifications and the delivery guarantee
//
// An event (opened, renotified, resolved) is written to alert_events in
// the transaction that changes the alert: the outbox. The stage then
// produces, through a pipeline.Producer, one Avro Notification per user
// subscribed to the rule kind's type on the point (point_notifications:
// threshold for thresholds and rate of change, data_gap, stuck_sensor,
// totalizer_reset, compliance_missing, compliance_rejected), keyed by user
// id, with id "alert:<alert_id>:<event>:<n>:<user_id>" (n: 1 for opened and
// resolved, the renotification's number otherwise) and created_at the
// event's time, and marks the event produced once Kafka acknowledged every
// one. That is done right after a reading causes events and again at every
// evaluation and at start, so an event recorded but not confirmed produced
// (a crash, Kafka down) is produced again, byte for byte the same: at
// least once, and exactly once in effect behind the notify stage's
// idempotency key. An acknowledged alert is not re-notified; its
// resolution is.
package alert

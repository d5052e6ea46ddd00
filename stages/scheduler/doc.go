// Package scheduler is the scheduler stage: it replaces the old system's
// Celery beat with periodic jobs run by exactly one replica, the leader,
// however many replicas run (`stackvps run --stages scheduler` on several
// hosts). The jobs are values of a Registry built in main (daily_report,
// health_check, source_sync); their schedules are configuration
// (scheduler.jobs, see package schedule for the forms and their DST rules).
//
// # Leadership
//
// The leader is the replica holding a PostgreSQL session-level advisory lock
// (pg_try_advisory_lock, keyed per schema), taken on a connection of its
// own, outside the pool: the lock lives exactly as long as that session. A
// replica that does not lead tries again every scheduler.leader_check. When
// the leader process dies (kill -9, crash), its socket closes, the server
// ends the session and releases the lock, and another replica takes over at
// its next try: within leader_check. When the leader's host vanishes
// without closing the socket, the server's TCP keepalives (set on the lock
// session: 5s idle, 3 probes 2s apart) end the session within about 11s.
// The leader checks every leader_check that its session is alive and still
// holds the lock, and steps down when not, cancelling its running jobs
// (another replica may be taking their periods over). The metric
// stackvps_scheduler_leader is 1 on the leader. The lock's connection must
// reach PostgreSQL directly or through a pooler in session mode: a pooler in
// transaction mode would hand the session (and its lock) to others.
//
// # Periods and runs
//
// A job's period is an occurrence of its schedule, identified by its
// instant (scheduled_for), which every replica computes alike. Before
// running a period the leader claims it: INSERT INTO scheduler_runs ... ON
// CONFLICT (job, scheduled_for) DO NOTHING. The unique key, not the lock
// alone, makes each period run once: two processes that briefly both
// believe they lead (a partitioned leader before it notices) cannot both
// claim it. The runner writes a heartbeat on the row every leader_check
// while the job runs, and the outcome (succeeded or failed, error,
// duration, details) when it ends.
//
// A period whose row is still running but whose heartbeat is older than
// scheduler.heartbeat_timeout belongs to a dead runner: the leader takes it
// over and runs it again (attempt + 1), appending the dead attempt to the
// row's failures with status abandoned and counting it in runs_total. A
// failed period is attempted again after scheduler.retry_after, up to
// scheduler.max_attempts attempts, as long as it is still the job's latest
// period. Jobs are written to be run again for the same period (their
// notifications carry deterministic ids, source_sync upserts).
//
// Missed periods: only the latest period of each job is ever considered,
// that is, the latest occurrence at or before now. Periods that passed
// while no replica led (every replica down, or a takeover slower than the
// schedule) are not run one by one: when a leader comes back it runs the
// latest missed period once, logs how many earlier ones it skipped and
// counts them in stackvps_scheduler_skipped_periods_total. There is no storm
// of catch-up runs after an outage. On a fresh database the latest past
// occurrence of each job runs at once.
//
// # Metrics and logs
//
// stackvps_scheduler_leader (0/1), _leadership_acquired_total,
// _runs_total{job,status} (succeeded, failed, abandoned),
// _run_duration_seconds{job}, _last_success_timestamp_seconds{job} (read
// from scheduler_runs, so take max() across replicas), and
// _skipped_periods_total{job}. Every claim, start, takeover, retry, success
// and failure is logged with job, scheduled_for and attempt.
//
// # Jobs
//
// daily_report (DailyReport): at "daily 07:00" by default, for the previous
// local day in scheduler.time_zone, per user subscribed to daily_report and
// per subscribed point, the compliance slots confirmed, rejected, in error,
// pending and missing; one notification per user (type daily_report, id
// daily_report:<date>:<user_id>).
//
// health_check (HealthCheck): every hour by default, every dependency (the
// doctor's checks), each stage's consumer lag, stale points and dead-letter
// growth since the previous run (end offsets kept in the run's details);
// findings go to every admin as one notification of type system (id
// health_check:<scheduled_for>:<user_id>). No findings, no notification.
//
// source_sync: every 6 hours by default, the compliance sources of the
// configuration are upserted into compliance_sources.
package scheduler

-- The scheduler's runs: one row per (job, period), so each period of a job
-- runs once however many replicas there are and however leadership moves.
--
-- The leader claims a period with INSERT ... ON CONFLICT (job,
-- scheduled_for) DO NOTHING before running it: the UNIQUE constraint, not
-- the leader lock alone, is what makes a period's run happen once, even when
-- two processes briefly both believe they lead (a partitioned leader that has
-- not yet noticed). A running row whose heartbeat stopped (its leader died)
-- or a failed one whose retry is due is taken over by updating the same row:
-- attempt goes up and the earlier attempt is appended to failures, so the
-- row keeps the whole story of its period.
CREATE TABLE scheduler_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job           text        NOT NULL CHECK (job ~ '^[a-z][a-z0-9_]*$'),
    scheduled_for timestamptz NOT NULL,
    status        text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    attempt       integer     NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    runner        text        NOT NULL CHECK (runner <> ''),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    duration      interval,
    error         text,
    details       jsonb,
    failures      jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(failures) = 'array'),
    UNIQUE (job, scheduled_for),
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
CREATE INDEX scheduler_runs_running_idx ON scheduler_runs (heartbeat_at) WHERE status = 'running';
COMMENT ON TABLE scheduler_runs IS 'One row per scheduled job period (UNIQUE job, scheduled_for), claimed by the leader before it runs. status running|succeeded|failed; runner is host/pid of the process running the current attempt, which refreshes heartbeat_at while it runs; duration = finished_at - started_at of that attempt. details is what the job recorded (health_check: dead-letter end offsets, compared by the next run). failures lists earlier attempts of the period: {attempt, runner, started_at, finished_at, status (failed|abandoned), error}.';
COMMENT ON COLUMN scheduler_runs.scheduled_for IS 'The period''s instant from the job''s schedule (UTC), the same on every replica: the idempotency key of the run with job.';
COMMENT ON COLUMN scheduler_runs.heartbeat_at IS 'Refreshed by the runner while the attempt runs; a running row older than scheduler.heartbeat_timeout belongs to a dead runner and is re-run by the leader.';

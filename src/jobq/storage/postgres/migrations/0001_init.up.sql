-- jobq schema, version 1: jobs, their error history, and registered workers.

CREATE TABLE jobq_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text NOT NULL DEFAULT 'default',
    kind             text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'queued',
    priority         integer NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 5,
    tenant           text,
    idempotency_key  text,
    unique_key       text,
    depends_on       bigint[] NOT NULL DEFAULT '{}',
    timeout_s        double precision,
    progress         jsonb,
    result           jsonb,
    last_error       text,
    cancel_requested boolean NOT NULL DEFAULT false,
    locked_by        text,
    heartbeat_at     timestamptz,
    request_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobq_jobs_status_valid CHECK (status IN
        ('queued', 'waiting', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT jobq_jobs_queue_valid CHECK (length(queue) BETWEEN 1 AND 128),
    CONSTRAINT jobq_jobs_kind_valid CHECK (length(kind) BETWEEN 1 AND 128),
    CONSTRAINT jobq_jobs_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT jobq_jobs_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    CONSTRAINT jobq_jobs_attempt_range CHECK (attempt >= 0 AND attempt <= max_attempts),
    CONSTRAINT jobq_jobs_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT jobq_jobs_timeout_positive CHECK (timeout_s IS NULL OR timeout_s > 0),
    CONSTRAINT jobq_jobs_running_is_locked CHECK (status <> 'running' OR locked_by IS NOT NULL)
);

-- The claim query's index: only claimable rows, in claim order. Two shapes, because a worker
-- serving named queues and a worker serving every queue need different leading columns to
-- read the rows already in order.
CREATE INDEX jobq_jobs_claim_by_queue ON jobq_jobs (queue, priority DESC, run_at, id)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX jobq_jobs_claim_any_queue ON jobq_jobs (priority DESC, run_at, id)
    WHERE status IN ('queued', 'retrying');
-- Rescue and cancel polling look at running jobs by worker.
CREATE INDEX jobq_jobs_running_by_worker ON jobq_jobs (locked_by) WHERE status = 'running';
-- Listing and filtering (newest first) by status.
CREATE INDEX jobq_jobs_status_id ON jobq_jobs (status, id);
-- An idempotency key names one job.
CREATE UNIQUE INDEX jobq_jobs_idempotency_key ON jobq_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Rows change status many times and are short-lived: leave room for HOT updates and let
-- autovacuum visit this table far more often than the defaults would.
ALTER TABLE jobq_jobs SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

CREATE TABLE jobq_job_errors (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL CHECK (attempt >= 0),
    error       text NOT NULL,
    traceback   text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobq_job_errors_job ON jobq_job_errors (job_id, attempt);

CREATE TABLE jobq_workers (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    queues       text[],
    concurrency  integer NOT NULL CHECK (concurrency >= 1),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

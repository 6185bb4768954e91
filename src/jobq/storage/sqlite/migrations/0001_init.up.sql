-- jobq schema, version 1: jobs, their error history, and registered workers.
--
-- The PostgreSQL schema column for column, in SQLite's types: timestamps are REAL unix epoch
-- seconds (UTC), JSON values and the depends_on array are TEXT holding JSON, booleans are
-- INTEGER 0/1. The driver passes "now" from Python; the defaults only serve rows written by
-- hand. AUTOINCREMENT, not a plain rowid, so ids are never reused and grow in insert order.

CREATE TABLE jobq_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT NOT NULL DEFAULT 'default',
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'queued',
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 5,
    tenant           TEXT,
    idempotency_key  TEXT,
    unique_key       TEXT,
    depends_on       TEXT NOT NULL DEFAULT '[]',
    timeout_s        REAL,
    progress         TEXT,
    result           TEXT,
    last_error       TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    locked_by        TEXT,
    heartbeat_at     REAL,
    request_id       TEXT,
    created_at       REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at       REAL,
    finished_at      REAL,
    updated_at       REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    CONSTRAINT jobq_jobs_status_valid CHECK (status IN
        ('queued', 'waiting', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT jobq_jobs_queue_valid CHECK (length(queue) BETWEEN 1 AND 128),
    CONSTRAINT jobq_jobs_kind_valid CHECK (length(kind) BETWEEN 1 AND 128),
    CONSTRAINT jobq_jobs_payload_object CHECK (json_type(payload) = 'object'),
    CONSTRAINT jobq_jobs_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    CONSTRAINT jobq_jobs_attempt_range CHECK (attempt >= 0 AND attempt <= max_attempts),
    CONSTRAINT jobq_jobs_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT jobq_jobs_timeout_positive CHECK (timeout_s IS NULL OR timeout_s > 0),
    CONSTRAINT jobq_jobs_running_is_locked CHECK (status <> 'running' OR locked_by IS NOT NULL)
);

-- The claim query's index: only claimable rows, in claim order. Two shapes, because a worker
-- serving named queues and a worker serving every queue need different leading columns to
-- read the rows already in order. SQLite uses a partial index only when the query repeats its
-- WHERE term exactly, so the claim queries spell it the same way.
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

-- (PostgreSQL's fillfactor and autovacuum settings have no SQLite counterpart.)

CREATE TABLE jobq_job_errors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL CHECK (attempt >= 0),
    error       TEXT NOT NULL,
    traceback   TEXT,
    recorded_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX jobq_job_errors_job ON jobq_job_errors (job_id, attempt);

CREATE TABLE jobq_workers (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT,
    concurrency  INTEGER NOT NULL CHECK (concurrency >= 1),
    started_at   REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    heartbeat_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

-- Paused queues: workers claim no job of a queue named here until it is resumed. Workers
-- keep the set in memory (see worker/pausing.py), so the claim itself never reads it.
CREATE TABLE jobq_paused_queues (
    queue     TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
);
-- Jobs finished per minute (epoch seconds of its start) and status, and how far that
-- summary goes: see the PostgreSQL migration that adds the same tables.
CREATE TABLE jobq_finished_minutes (
    minute INTEGER NOT NULL,
    status TEXT NOT NULL,
    jobs   INTEGER NOT NULL,
    PRIMARY KEY (minute, status)
);
CREATE TABLE jobq_rollup_watermark (
    name    TEXT PRIMARY KEY,
    through REAL NOT NULL
);
-- Finished jobs by finish time, for the summary and the charts' last minutes (PostgreSQL's
-- succeeded one comes from its migration 0005): without them each summary step read every
-- succeeded or failed job (the status index is by id).
CREATE INDEX jobq_jobs_succeeded_finished ON jobq_jobs (finished_at)
    WHERE status = 'succeeded';
CREATE INDEX jobq_jobs_failed_finished ON jobq_jobs (finished_at) WHERE status = 'failed';

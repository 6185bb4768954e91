-- Paused queues (see the PostgreSQL migration that adds the same table).
CREATE TABLE jobq_paused_queues (
    queue     TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
);
-- The dashboard's charts read the jobs that succeeded in the last hour or day by finish
-- time; without this index each chart read every succeeded job (the status index is by id).
-- PostgreSQL has had the same index since its retention change.
CREATE INDEX jobq_jobs_succeeded_finished ON jobq_jobs (finished_at)
    WHERE status = 'succeeded';

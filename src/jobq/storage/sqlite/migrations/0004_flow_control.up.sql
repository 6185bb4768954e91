-- Flow control: unique jobs, dependencies, per-kind rate limits and tenant fairness; the
-- PostgreSQL migration of the same number, in SQLite's terms. The partial indexes stay empty
-- for jobs that use none of these features.

-- Which statuses hold a job's unique key, as bits: queued 1, waiting 2, running 4,
-- retrying 8, succeeded 16, failed 32, cancelled 64.
ALTER TABLE jobq_jobs ADD COLUMN unique_states INTEGER;
ALTER TABLE jobq_jobs ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0;

-- SQLite has no SQL functions of our own in an index, so the status-to-bit mapping is
-- spelled out; the driver's lookup repeats it word for word (a partial index serves only a
-- query that repeats its WHERE term).
CREATE UNIQUE INDEX jobq_jobs_unique_key ON jobq_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND (unique_states & (CASE status
        WHEN 'queued' THEN 1 WHEN 'waiting' THEN 2 WHEN 'running' THEN 4
        WHEN 'retrying' THEN 8 WHEN 'succeeded' THEN 16 WHEN 'failed' THEN 32
        WHEN 'cancelled' THEN 64 ELSE 0 END)) <> 0;

CREATE INDEX jobq_jobs_claim_by_tenant ON jobq_jobs (tenant, priority DESC, run_at, id)
    WHERE status IN ('queued', 'retrying') AND tenant IS NOT NULL;

CREATE TABLE jobq_job_dependencies (
    parent_id INTEGER NOT NULL,
    job_id    INTEGER NOT NULL REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, job_id)
);
CREATE INDEX jobq_job_dependencies_job ON jobq_job_dependencies (job_id);

CREATE TABLE jobq_rate_starts (
    kind       TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE INDEX jobq_rate_starts_kind_time ON jobq_rate_starts (kind, started_at);

-- Settling dependents when a job others depend on finishes (see the PostgreSQL migration).
-- SQLite runs one writer at a time, so no locking dance is needed; the driver turns on
-- recursive_triggers so a cancelled dependent cancels its own dependents in turn. Times are
-- the wall clock in epoch seconds, as the driver writes them.
CREATE TRIGGER jobq_release_dependents
AFTER UPDATE OF status ON jobq_jobs
WHEN NEW.has_dependents AND OLD.status IS NOT NEW.status AND NEW.status = 'succeeded'
BEGIN
    UPDATE jobq_jobs
    SET status = 'queued',
        run_at = max(run_at, (julianday('now') - 2440587.5) * 86400.0),
        updated_at = (julianday('now') - 2440587.5) * 86400.0
    WHERE id IN (SELECT job_id FROM jobq_job_dependencies WHERE parent_id = NEW.id)
      AND status = 'waiting'
      AND NOT EXISTS (
          SELECT 1 FROM jobq_job_dependencies d JOIN jobq_jobs p ON p.id = d.parent_id
          WHERE d.job_id = jobq_jobs.id AND p.status <> 'succeeded');
END;

CREATE TRIGGER jobq_cancel_dependents
AFTER UPDATE OF status ON jobq_jobs
WHEN NEW.has_dependents AND OLD.status IS NOT NEW.status
     AND NEW.status IN ('failed', 'cancelled')
BEGIN
    UPDATE jobq_jobs
    SET status = 'cancelled',
        finished_at = (julianday('now') - 2440587.5) * 86400.0,
        updated_at = (julianday('now') - 2440587.5) * 86400.0,
        last_error = 'dependency ' || NEW.id || ' ' || NEW.status
    WHERE id IN (SELECT job_id FROM jobq_job_dependencies WHERE parent_id = NEW.id)
      AND status = 'waiting';
END;

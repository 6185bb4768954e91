-- Flow control: unique jobs, dependencies, per-kind rate limits and tenant fairness. Every
-- index here is partial on a column that stays NULL (or false) for jobs that do not use the
-- feature, so a queue that uses none of them pays no extra index writes.

-- Which statuses hold a job's unique key, as bits (see jobq_status_bit): a job with a
-- unique_key blocks a second job with the same key while its status is one of these.
ALTER TABLE jobq_jobs ADD COLUMN unique_states smallint;
-- Set on a job once another job depends on it: the trigger below only runs for such jobs.
ALTER TABLE jobq_jobs ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;

CREATE FUNCTION jobq_status_bit(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'queued' THEN 1 WHEN 'waiting' THEN 2 WHEN 'running' THEN 4
        WHEN 'retrying' THEN 8 WHEN 'succeeded' THEN 16 WHEN 'failed' THEN 32
        WHEN 'cancelled' THEN 64 ELSE 0 END::smallint
$$;

-- The race-safe part of unique jobs: two enqueues with one key cannot both insert.
CREATE UNIQUE INDEX jobq_jobs_unique_key ON jobq_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND (unique_states & jobq_status_bit(status)) <> 0;

-- Fair claiming walks the distinct tenants of claimable jobs and takes a share of each.
CREATE INDEX jobq_jobs_claim_by_tenant ON jobq_jobs (tenant, priority DESC, run_at, id)
    WHERE status IN ('queued', 'retrying') AND tenant IS NOT NULL;

-- A job and the jobs it waits for.
CREATE TABLE jobq_job_dependencies (
    parent_id bigint NOT NULL,
    job_id    bigint NOT NULL REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, job_id)
);
CREATE INDEX jobq_job_dependencies_job ON jobq_job_dependencies (job_id);

-- Starts of rate-limited kinds within their window (a sliding log, pruned as it goes).
CREATE TABLE jobq_rate_starts (
    kind       text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobq_rate_starts_kind_time ON jobq_rate_starts (kind, started_at);

-- When a job that others depend on finishes: success releases each dependent whose parents
-- have all succeeded; failure or cancellation cancels the waiting dependents (and, through
-- this same trigger on them, their dependents). A trigger, so that every path to a final
-- status (completion, retries exhausted, cancel, lease rescue) settles dependents alike.
CREATE FUNCTION jobq_settle_dependents() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    released record;
BEGIN
    -- Lock the waiting dependents first, in a statement of its own: when two parents of one
    -- job finish in concurrent transactions, the second waits here for the first to commit,
    -- and its next statement (a new snapshot) then sees both parents finished.
    PERFORM 1 FROM jobq_jobs
    WHERE id IN (SELECT job_id FROM jobq_job_dependencies WHERE parent_id = NEW.id)
      AND status = 'waiting'
    ORDER BY id
    FOR UPDATE;
    IF NEW.status = 'succeeded' THEN
        FOR released IN
            UPDATE jobq_jobs j
            SET status = 'queued', run_at = greatest(j.run_at, now()), updated_at = now()
            WHERE j.id IN (SELECT job_id FROM jobq_job_dependencies WHERE parent_id = NEW.id)
              AND j.status = 'waiting'
              AND NOT EXISTS (
                  SELECT 1 FROM jobq_job_dependencies d JOIN jobq_jobs p ON p.id = d.parent_id
                  WHERE d.job_id = j.id AND p.status <> 'succeeded')
            RETURNING j.queue
        LOOP
            PERFORM pg_notify('jobq', 'new:' || released.queue);
        END LOOP;
    ELSE
        UPDATE jobq_jobs j
        SET status = 'cancelled', finished_at = now(), updated_at = now(),
            last_error = 'dependency ' || NEW.id || ' ' || NEW.status
        WHERE j.id IN (SELECT job_id FROM jobq_job_dependencies WHERE parent_id = NEW.id)
          AND j.status = 'waiting';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobq_settle_dependents
AFTER UPDATE OF status ON jobq_jobs
FOR EACH ROW
WHEN (NEW.has_dependents AND OLD.status IS DISTINCT FROM NEW.status
      AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
EXECUTE FUNCTION jobq_settle_dependents();

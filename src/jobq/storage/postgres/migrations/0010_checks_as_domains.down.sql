DROP TRIGGER jobq_settle_dependents ON jobq_jobs;
ALTER TABLE jobq_jobs
    ALTER COLUMN status TYPE text,
    ALTER COLUMN queue TYPE text,
    ALTER COLUMN kind TYPE text,
    ALTER COLUMN payload TYPE jsonb,
    ALTER COLUMN priority TYPE integer,
    ALTER COLUMN max_attempts TYPE integer,
    ALTER COLUMN timeout_s TYPE double precision,
    ADD CONSTRAINT jobq_jobs_status_valid CHECK (status IN
        ('queued', 'waiting', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    ADD CONSTRAINT jobq_jobs_queue_valid CHECK (length(queue) BETWEEN 1 AND 128),
    ADD CONSTRAINT jobq_jobs_kind_valid CHECK (length(kind) BETWEEN 1 AND 128),
    ADD CONSTRAINT jobq_jobs_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    ADD CONSTRAINT jobq_jobs_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    ADD CONSTRAINT jobq_jobs_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    ADD CONSTRAINT jobq_jobs_timeout_positive CHECK (timeout_s IS NULL OR timeout_s > 0);
CREATE TRIGGER jobq_settle_dependents
AFTER UPDATE OF status ON jobq_jobs
FOR EACH ROW
WHEN (NEW.has_dependents AND OLD.status IS DISTINCT FROM NEW.status
      AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
EXECUTE FUNCTION jobq_settle_dependents();
DROP DOMAIN jobq_status, jobq_name, jobq_payload, jobq_priority, jobq_max_attempts,
    jobq_timeout;

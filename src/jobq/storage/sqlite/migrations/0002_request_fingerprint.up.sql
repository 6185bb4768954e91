-- A digest of the request that created a job with an idempotency key, so a replay with the
-- same key but a different body can be told apart from a true replay.
ALTER TABLE jobq_jobs ADD COLUMN request_fingerprint TEXT;
-- Expired idempotency keys are cleared by age; this finds them without scanning every job.
CREATE INDEX jobq_jobs_idempotency_age ON jobq_jobs (created_at)
    WHERE idempotency_key IS NOT NULL;

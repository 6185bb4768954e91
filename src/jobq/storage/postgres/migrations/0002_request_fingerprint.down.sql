DROP INDEX IF EXISTS jobq_jobs_idempotency_age;
ALTER TABLE jobq_jobs DROP COLUMN IF EXISTS request_fingerprint;

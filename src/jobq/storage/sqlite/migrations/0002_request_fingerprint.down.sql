DROP INDEX IF EXISTS jobq_jobs_idempotency_age;
-- SQLite has no DROP COLUMN IF EXISTS; the column is always there when this runs.
ALTER TABLE jobq_jobs DROP COLUMN request_fingerprint;

DROP TRIGGER IF EXISTS jobq_cancel_dependents;
DROP TRIGGER IF EXISTS jobq_release_dependents;
DROP TABLE IF EXISTS jobq_rate_starts;
DROP TABLE IF EXISTS jobq_job_dependencies;
DROP INDEX IF EXISTS jobq_jobs_claim_by_tenant;
DROP INDEX IF EXISTS jobq_jobs_unique_key;
ALTER TABLE jobq_jobs DROP COLUMN has_dependents;
ALTER TABLE jobq_jobs DROP COLUMN unique_states;

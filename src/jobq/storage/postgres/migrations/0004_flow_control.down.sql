DROP TRIGGER IF EXISTS jobq_settle_dependents ON jobq_jobs;
DROP FUNCTION IF EXISTS jobq_settle_dependents();
DROP TABLE IF EXISTS jobq_rate_starts;
DROP TABLE IF EXISTS jobq_job_dependencies;
DROP INDEX IF EXISTS jobq_jobs_claim_by_tenant;
DROP INDEX IF EXISTS jobq_jobs_unique_key;
DROP FUNCTION IF EXISTS jobq_status_bit(text);
ALTER TABLE jobq_jobs DROP COLUMN IF EXISTS has_dependents;
ALTER TABLE jobq_jobs DROP COLUMN IF EXISTS unique_states;

DROP INDEX IF EXISTS jobq_jobs_succeeded_finished;
DROP INDEX IF EXISTS jobq_jobs_rare_status;
CREATE INDEX IF NOT EXISTS jobq_jobs_status_id ON jobq_jobs (status, id);

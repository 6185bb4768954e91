DROP TABLE IF EXISTS jobq_workers;
DROP TABLE IF EXISTS jobq_job_errors;
DROP TABLE IF EXISTS jobq_jobs;

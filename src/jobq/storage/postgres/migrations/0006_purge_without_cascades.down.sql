DELETE FROM jobq_job_errors e WHERE NOT EXISTS (SELECT 1 FROM jobq_jobs j WHERE j.id = e.job_id);
DELETE FROM jobq_job_dependencies d
WHERE NOT EXISTS (SELECT 1 FROM jobq_jobs j WHERE j.id = d.job_id);
ALTER TABLE jobq_job_errors ADD CONSTRAINT jobq_job_errors_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES jobq_jobs (id) ON DELETE CASCADE;
ALTER TABLE jobq_job_dependencies ADD CONSTRAINT jobq_job_dependencies_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES jobq_jobs (id) ON DELETE CASCADE;

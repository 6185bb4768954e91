-- Retention deletes a job's error history and dependency rows itself, in the statement that
-- deletes the jobs (purge_finished), instead of through ON DELETE CASCADE: a cascade runs a
-- trigger per deleted job and table, which took 9.5 of the 12.3 ms a batch of 2,000 cost
-- (EXPLAIN ANALYZE). Nothing else deletes jobs. An error row is only written by the
-- statement that moves its job out of 'running' (which retention never deletes), a
-- dependency row only in the transaction that inserts its job, so no row can name a job
-- that does not exist. Workers of an older jobq still running when this is applied delete
-- jobs without these rows: see docs/runbook.md, "Upgrading jobq".
ALTER TABLE jobq_job_errors DROP CONSTRAINT jobq_job_errors_job_id_fkey;
ALTER TABLE jobq_job_dependencies DROP CONSTRAINT jobq_job_dependencies_job_id_fkey;

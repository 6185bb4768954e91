-- Retention deletes a job's error history and dependency rows itself, in the statement that
-- deletes the jobs (purge_finished), instead of through ON DELETE CASCADE: a cascade runs a
-- trigger per deleted job and table, which took 9.5 of the 12.3 ms a batch of 2,000 cost
-- (EXPLAIN ANALYZE). Nothing else deletes jobs. Rows in these tables are only ever written
-- for a job the same statement just inserted or updated (failures, cancellations, rescue,
-- dependencies at enqueue), so no row can name a job that does not exist.
ALTER TABLE jobq_job_errors DROP CONSTRAINT jobq_job_errors_job_id_fkey;
ALTER TABLE jobq_job_dependencies DROP CONSTRAINT jobq_job_dependencies_job_id_fkey;

-- The (status, id) index took an entry for every job three times over (queued, running,
-- succeeded): a third of the database's CPU in a drain went to index inserts, and this one
-- index was two of the five per job (perf, 200,000-job drain). What it served is kept:
--  - listing by a rare status (waiting, retrying, failed: the dead-letter set, cancelled),
--    newest first: a partial index holding only those;
--  - listing queued or running jobs: the claim and running-by-worker indexes hold them;
--    listing succeeded ones (most of the table) reads the primary key backwards;
--  - retention: succeeded jobs by finish time, so each purge reads only what it deletes
--    (before, the planner read the whole table for it on each maintenance round: 104-108 ms
--    at 200,000 succeeded jobs with none due).
DROP INDEX jobq_jobs_status_id;
CREATE INDEX jobq_jobs_rare_status ON jobq_jobs (status, id)
    WHERE status IN ('waiting', 'retrying', 'failed', 'cancelled');
CREATE INDEX jobq_jobs_succeeded_finished ON jobq_jobs (finished_at)
    WHERE status = 'succeeded';

-- Paused queues: workers claim no job of a queue named here until it is resumed. Workers
-- keep the set in memory (see worker/pausing.py), so the claim itself never reads this table.
CREATE TABLE jobq_paused_queues (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Jobs finished per minute and status, summarized by the maintenance leader a minute or so
-- after each minute closes (see rollup.py): the dashboard's charts of the last day read
-- these 2,880 rows instead of every job finished that day (900,000 jobs: 2.9 s to count,
-- against a few milliseconds).
CREATE TABLE jobq_finished_minutes (
    minute timestamptz NOT NULL,
    status text NOT NULL,
    jobs   bigint NOT NULL,
    PRIMARY KEY (minute, status)
);
-- How far the summary goes: every minute before this one is in jobq_finished_minutes.
CREATE TABLE jobq_rollup_watermark (
    name    text PRIMARY KEY,
    through timestamptz NOT NULL
);
-- Failed jobs by finish time, for the summary and the charts' last minutes: through the
-- rare-status index they were all read (50,000 dead letters: 314 ms). Only failed jobs
-- have an entry, so completions pay nothing for it.
CREATE INDEX jobq_jobs_failed_finished ON jobq_jobs (finished_at) WHERE status = 'failed';

DROP INDEX jobq_jobs_succeeded_finished;
DROP TABLE jobq_paused_queues;

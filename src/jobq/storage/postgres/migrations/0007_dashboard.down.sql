DROP INDEX jobq_jobs_failed_finished;
DROP TABLE jobq_rollup_watermark;
DROP TABLE jobq_finished_minutes;
DROP TABLE jobq_paused_queues;

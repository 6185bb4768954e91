DROP TABLE jobq_paused_queues;

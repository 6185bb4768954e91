DROP TABLE IF EXISTS jobq_leader;

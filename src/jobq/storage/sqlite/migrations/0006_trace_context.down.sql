ALTER TABLE jobq_jobs DROP COLUMN trace_context;

-- The enqueuer's W3C trace context (traceparent); see the PostgreSQL migration of the same name.
ALTER TABLE jobq_jobs ADD COLUMN trace_context TEXT;

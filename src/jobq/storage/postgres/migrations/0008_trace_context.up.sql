-- The W3C trace context (traceparent) of the span that enqueued a job, so that each attempt's
-- span continues the enqueuer's trace wherever and whenever it runs. NULL when the enqueuer
-- was not tracing; adding a nullable column without a default rewrites no rows.
ALTER TABLE jobq_jobs ADD COLUMN trace_context text;

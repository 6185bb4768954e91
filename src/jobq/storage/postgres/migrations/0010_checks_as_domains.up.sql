-- The single-column checks of jobq_jobs as domains. PostgreSQL reads a table's CHECK
-- constraints back from their stored text for every statement that writes the table, which
-- made them about a seventh of the server's CPU for a one-row INSERT; a domain's checks stay
-- parsed in the type cache, and a statement checks only the columns it writes. The rules are
-- the same, and so are the constraint names an error quotes, but for queue and kind, which
-- share one domain and its name (jobq_jobs_name_valid). The two checks that relate columns
-- (attempt and max_attempts; running and locked_by) stay on the table.
--
-- Changing a column's type rewrites the table and rebuilds its indexes, once for all seven
-- columns (one ALTER TABLE), holding an exclusive lock on jobq_jobs meanwhile. A column used
-- in a trigger's WHEN cannot change type, so the dependents' trigger is made again around it.
CREATE DOMAIN jobq_status AS text CONSTRAINT jobq_jobs_status_valid CHECK (VALUE IN
    ('queued', 'waiting', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'));
CREATE DOMAIN jobq_name AS text CONSTRAINT jobq_jobs_name_valid
    CHECK (length(VALUE) BETWEEN 1 AND 128);
CREATE DOMAIN jobq_payload AS jsonb CONSTRAINT jobq_jobs_payload_object
    CHECK (jsonb_typeof(VALUE) = 'object');
CREATE DOMAIN jobq_priority AS integer CONSTRAINT jobq_jobs_priority_range
    CHECK (VALUE BETWEEN -1000 AND 1000);
CREATE DOMAIN jobq_max_attempts AS integer CONSTRAINT jobq_jobs_max_attempts_range
    CHECK (VALUE BETWEEN 1 AND 1000);
CREATE DOMAIN jobq_timeout AS double precision CONSTRAINT jobq_jobs_timeout_positive
    CHECK (VALUE > 0);

DROP TRIGGER jobq_settle_dependents ON jobq_jobs;
ALTER TABLE jobq_jobs
    DROP CONSTRAINT jobq_jobs_status_valid,
    DROP CONSTRAINT jobq_jobs_queue_valid,
    DROP CONSTRAINT jobq_jobs_kind_valid,
    DROP CONSTRAINT jobq_jobs_payload_object,
    DROP CONSTRAINT jobq_jobs_priority_range,
    DROP CONSTRAINT jobq_jobs_max_attempts_range,
    DROP CONSTRAINT jobq_jobs_timeout_positive,
    ALTER COLUMN status TYPE jobq_status,
    ALTER COLUMN queue TYPE jobq_name,
    ALTER COLUMN kind TYPE jobq_name,
    ALTER COLUMN payload TYPE jobq_payload,
    ALTER COLUMN priority TYPE jobq_priority,
    ALTER COLUMN max_attempts TYPE jobq_max_attempts,
    ALTER COLUMN timeout_s TYPE jobq_timeout;
CREATE TRIGGER jobq_settle_dependents
AFTER UPDATE OF status ON jobq_jobs
FOR EACH ROW
WHEN (NEW.has_dependents AND OLD.status IS DISTINCT FROM NEW.status
      AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
EXECUTE FUNCTION jobq_settle_dependents();

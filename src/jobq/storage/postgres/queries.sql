-- Named queries of the PostgreSQL driver. Every status change carries a WHERE status ... guard
-- matching jobq.model.TRANSITIONS; writes about a running job are also guarded by its attempt.

-- name: insert_jobs
-- One statement, one round trip, for any number of jobs, and the wake-up NOTIFY too
-- (delivered at commit; PostgreSQL folds the duplicates of a transaction). The batch travels
-- as one JSON array, expanded in order by jsonb_to_recordset: far cheaper for the client than
-- a dozen typed arrays. A job whose idempotency key exists already, or whose unique key an
-- active job holds, inserts nothing (ON CONFLICT without a target covers both indexes); the
-- driver then reads the job that holds the key. A job waiting on dependencies is inserted
-- 'waiting' and wakes nobody.
WITH inserted AS (
INSERT INTO jobq_jobs (queue, kind, payload, priority, run_at, max_attempts, tenant,
                       idempotency_key, unique_key, unique_states, depends_on, timeout_s,
                       request_id, request_fingerprint, status, trace_context)
SELECT j.queue, j.kind, j.payload, j.priority, COALESCE(j.run_at, now()), j.max_attempts,
       j.tenant, j.idempotency_key, j.unique_key, j.unique_states,
       COALESCE(j.depends_on, '{}'), j.timeout_s, j.request_id, j.request_fingerprint,
       COALESCE(j.status, 'queued'), j.trace_context
FROM jsonb_to_recordset(%(jobs)s::jsonb)
     AS j(queue text, kind text, payload jsonb, priority int, run_at timestamptz,
          max_attempts int, tenant text, idempotency_key text, unique_key text,
          unique_states smallint, depends_on bigint[], timeout_s float8, request_id text,
          request_fingerprint text, status text, trace_context text)
ON CONFLICT DO NOTHING
RETURNING id, run_at, created_at, idempotency_key, unique_key, status, queue
)
-- Only what the database decided comes back: the driver knows the rest from the request,
-- and parsing 27 columns of every new row cost more than the INSERT itself.
SELECT inserted.id, inserted.run_at, inserted.created_at, inserted.idempotency_key,
       inserted.unique_key, inserted.status,
       CASE WHEN inserted.status = 'queued' THEN pg_notify('jobq', 'new:' || inserted.queue)
       END AS notified
FROM inserted

-- name: reserve_ids
-- For a COPY of :count jobs: their ids, the transaction's now() (every row's created_at), and
-- the wake-up of each queue (sent at commit).
SELECT now(),
       (SELECT array_agg(nextval('jobq_jobs_id_seq')) FROM generate_series(1, %(count)s)),
       (SELECT count(pg_notify('jobq', 'new:' || q)) FROM unnest(%(queues)s::text[]) AS q)

-- name: copy_jobs
COPY jobq_jobs (id, queue, kind, payload, priority, run_at, max_attempts, tenant, timeout_s,
                request_id)
FROM STDIN

-- name: copy_jobs_due_now
-- copy_jobs for a batch of jobs without run_at: the column's default, now(), is the time
-- the other one writes out, and the server does not parse a timestamp per row (5.0-5.2
-- against 4.2-4.6 µs of its CPU a row, COPY of 50,000 rows).
COPY jobq_jobs (id, queue, kind, payload, priority, max_attempts, tenant, timeout_s, request_id)
FROM STDIN

-- name: insert_job
-- insert_jobs for exactly one job: plain parameters instead of a JSON array to unpack.
WITH inserted AS (
    INSERT INTO jobq_jobs (queue, kind, payload, priority, run_at, max_attempts, tenant,
                           idempotency_key, unique_key, unique_states, depends_on, timeout_s,
                           request_id, request_fingerprint, status, trace_context)
    VALUES (%(queue)s, %(kind)s, %(payload)s::jsonb, %(priority)s,
            COALESCE(%(run_at)s::timestamptz, now()), %(max_attempts)s, %(tenant)s,
            %(idempotency_key)s, %(unique_key)s, %(unique_states)s,
            COALESCE(%(depends_on)s::bigint[], '{}'), %(timeout_s)s, %(request_id)s,
            %(request_fingerprint)s, COALESCE(%(status)s, 'queued'), %(trace_context)s)
    ON CONFLICT DO NOTHING
    RETURNING id, run_at, created_at, idempotency_key, unique_key, status, queue
)
SELECT inserted.id, inserted.run_at, inserted.created_at, inserted.idempotency_key,
       inserted.unique_key, inserted.status,
       CASE WHEN inserted.status = 'queued' THEN pg_notify('jobq', 'new:' || inserted.queue)
       END AS notified
FROM inserted

-- name: insert_plain_job
-- One job without keys or parents, the common call of a producer enqueueing one at a time:
-- only the columns such a job sets, no conflict to arbitrate, and the row's wake-up.
WITH inserted AS (
    INSERT INTO jobq_jobs (queue, kind, payload, priority, run_at, max_attempts, tenant,
                           timeout_s, request_id)
    VALUES (%s, %s, %s::jsonb, %s, COALESCE(%s::timestamptz, now()), %s, %s, %s, %s)
    RETURNING id, run_at, created_at, queue
)
SELECT id, run_at, created_at, pg_notify('jobq', 'new:' || queue) FROM inserted

-- name: jobs_by_idempotency_keys
SELECT * FROM jobq_jobs WHERE idempotency_key = ANY(%(keys)s::text[])

-- name: jobs_by_unique_keys
-- The jobs holding these unique keys now; the WHERE repeats the unique index's predicate.
SELECT * FROM jobq_jobs
WHERE unique_key = ANY(%(keys)s::text[])
  AND unique_key IS NOT NULL AND (unique_states & jobq_status_bit(status)) <> 0

-- name: mark_parents
-- Locks the parents until the dependents are in (so none can finish unseen in between) and
-- flags them, which is what makes the settling trigger run when they finish.
UPDATE jobq_jobs SET has_dependents = true
WHERE id = ANY(%(ids)s::bigint[])
RETURNING id, status

-- name: insert_dependencies
INSERT INTO jobq_job_dependencies (parent_id, job_id)
SELECT parent_id, job_id FROM unnest(%(parents)s::bigint[], %(jobs)s::bigint[]) AS d(parent_id, job_id)
ON CONFLICT DO NOTHING

-- name: cancel_born_orphaned
-- A dependent enqueued after a parent already failed or was cancelled.
UPDATE jobq_jobs
SET status = 'cancelled', finished_at = now(), updated_at = now(), last_error = %(reason)s
WHERE id = %(id)s AND status = 'waiting'
RETURNING *

-- name: tenant_queued
SELECT count(*) FROM jobq_jobs
WHERE tenant = %(tenant)s AND status IN ('queued', 'retrying') AND tenant IS NOT NULL

-- name: notify_new
SELECT pg_notify('jobq', 'new:' || q) FROM unnest(%(queues)s::text[]) AS q

-- name: notify_cancel
SELECT pg_notify('jobq', 'cancel:' || %(id)s::text)

-- name: claim_batch_by_queue
-- Every claim picks and locks ids in a sub-select and updates them through the primary key
-- (id = ANY(ARRAY(...))). Joined as a CTE instead, the planner hashed the whole table for
-- each batch (a sequential scan: 45 ms per 1,000 jobs at 40,000 rows, against 23 ms).
-- Every claim also sets synchronous_commit for its own transaction: 'off' when the setting
-- claim_async_commit is on (%(commit)s), else the session's value, unchanged. It runs once
-- (an InitPlan under a one-time filter), so it changes no scan of the plan.
UPDATE jobq_jobs j
SET status = 'running', attempt = j.attempt + 1, locked_by = %(worker_id)s,
    heartbeat_at = now(), started_at = now(), updated_at = now()
WHERE j.id = ANY(ARRAY(
    SELECT id FROM jobq_jobs
    WHERE status IN ('queued', 'retrying') AND run_at <= now() AND queue = ANY(%(queues)s::text[])
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
  AND (SELECT set_config('synchronous_commit',
                         COALESCE(%(commit)s, current_setting('synchronous_commit')), true))
      IS NOT NULL
RETURNING j.*

-- name: claim_batch_any_queue
UPDATE jobq_jobs j
SET status = 'running', attempt = j.attempt + 1, locked_by = %(worker_id)s,
    heartbeat_at = now(), started_at = now(), updated_at = now()
WHERE j.id = ANY(ARRAY(
    SELECT id FROM jobq_jobs
    WHERE status IN ('queued', 'retrying') AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
  AND (SELECT set_config('synchronous_commit',
                         COALESCE(%(commit)s, current_setting('synchronous_commit')), true))
      IS NOT NULL  -- the claim's commit: see claim_batch_by_queue
RETURNING j.*

-- name: claim_tenants
-- Fair claiming, step 1: the next tenants (after :after, in name order) with due work, found
-- by skipping through the tenant index one tenant at a time rather than reading every row.
WITH RECURSIVE t(tenant) AS (
    (SELECT tenant FROM jobq_jobs
     WHERE status IN ('queued', 'retrying') AND tenant IS NOT NULL AND tenant > %(after)s
       AND run_at <= now()
       AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
       AND kind <> ALL(%(skip_kinds)s::text[]) AND queue <> ALL(%(skip_queues)s::text[])
     ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant FROM jobq_jobs j
            WHERE j.status IN ('queued', 'retrying') AND j.tenant IS NOT NULL
              AND j.tenant > t.tenant AND j.run_at <= now()
              AND (%(queues)s::text[] IS NULL OR j.queue = ANY(%(queues)s::text[]))
              AND j.kind <> ALL(%(skip_kinds)s::text[])
              AND j.queue <> ALL(%(skip_queues)s::text[])
            ORDER BY j.tenant LIMIT 1)
    FROM t WHERE t.tenant IS NOT NULL
)
SELECT tenant FROM t WHERE tenant IS NOT NULL LIMIT %(most)s

-- name: claim_fair
-- Fair claiming, step 2: up to its share of jobs from each of these tenants, each tenant's
-- in priority order.
UPDATE jobq_jobs j
SET status = 'running', attempt = j.attempt + 1, locked_by = %(worker_id)s,
    heartbeat_at = now(), started_at = now(), updated_at = now()
WHERE j.id = ANY(ARRAY(
    SELECT c.id
    FROM unnest(%(tenants)s::text[], %(shares)s::int[]) AS t(tenant, share),
    LATERAL (
        SELECT id FROM jobq_jobs
        WHERE status IN ('queued', 'retrying') AND tenant IS NOT NULL AND tenant = t.tenant
          AND run_at <= now()
          AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
          AND kind <> ALL(%(skip_kinds)s::text[]) AND queue <> ALL(%(skip_queues)s::text[])
        ORDER BY priority DESC, run_at, id
        LIMIT t.share
        FOR UPDATE SKIP LOCKED
    ) AS c
))
  AND (SELECT set_config('synchronous_commit',
                         COALESCE(%(commit)s, current_setting('synchronous_commit')), true))
      IS NOT NULL  -- the claim's commit: see claim_batch_by_queue
RETURNING j.*

-- name: claim_filtered
-- The plain claim with the extra filters of limits and fairness: jobs of limited kinds or
-- queues are left to claim_limited, and (when fair) tenants' jobs to claim_fair.
UPDATE jobq_jobs j
SET status = 'running', attempt = j.attempt + 1, locked_by = %(worker_id)s,
    heartbeat_at = now(), started_at = now(), updated_at = now()
WHERE j.id = ANY(ARRAY(
    SELECT id FROM jobq_jobs
    WHERE status IN ('queued', 'retrying') AND run_at <= now()
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND kind <> ALL(%(skip_kinds)s::text[]) AND queue <> ALL(%(skip_queues)s::text[])
      AND (NOT %(tenantless)s OR tenant IS NULL)
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
  AND (SELECT set_config('synchronous_commit',
                         COALESCE(%(commit)s, current_setting('synchronous_commit')), true))
      IS NOT NULL  -- the claim's commit: see claim_batch_by_queue
RETURNING j.*

-- name: running_counts
SELECT kind, queue, count(*) FROM jobq_jobs
WHERE status = 'running' AND (kind = ANY(%(kinds)s::text[]) OR queue = ANY(%(queues)s::text[]))
GROUP BY kind, queue

-- name: recent_starts
SELECT s.kind, count(*) FROM jobq_rate_starts s
JOIN unnest(%(kinds)s::text[], %(windows)s::float8[]) AS w(kind, window_s) ON w.kind = s.kind
WHERE s.started_at > now() - make_interval(secs => w.window_s)
GROUP BY s.kind

-- name: limited_candidates
-- Due jobs under some limit, in claim order, skipping kinds and queues with no room left.
SELECT id, kind, queue FROM jobq_jobs
WHERE status IN ('queued', 'retrying') AND run_at <= now()
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (kind = ANY(%(limited_kinds)s::text[]) OR queue = ANY(%(limited_queues)s::text[]))
  AND kind <> ALL(%(full_kinds)s::text[]) AND queue <> ALL(%(full_queues)s::text[])
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: claim_ids
UPDATE jobq_jobs j
SET status = 'running', attempt = j.attempt + 1, locked_by = %(worker_id)s,
    heartbeat_at = now(), started_at = now(), updated_at = now()
WHERE j.id = ANY(%(ids)s::bigint[])
  AND (j.status IN ('queued', 'retrying')) IS TRUE  -- no status index: see complete_many
  AND (SELECT set_config('synchronous_commit',
                         COALESCE(%(commit)s, current_setting('synchronous_commit')), true))
      IS NOT NULL  -- the claim's commit: see claim_batch_by_queue
RETURNING j.*

-- name: record_starts
INSERT INTO jobq_rate_starts (kind) SELECT unnest(%(kinds)s::text[])

-- name: prune_starts
DELETE FROM jobq_rate_starts s
USING unnest(%(kinds)s::text[], %(windows)s::float8[]) AS w(kind, window_s)
WHERE s.kind = w.kind AND s.started_at <= now() - make_interval(secs => w.window_s)

-- name: complete_many
-- Completions and failures update the jobs table alone, found by primary key (id = ANY),
-- each row's own values picked from the arrays at its id's position: the driver sends the
-- ids sorted, so width_bucket finds it by binary search. Not a join to unnest() of the
-- arrays: such a plan depends on the statistics, and when they say few jobs are running
-- the planner reads the whole running index through a bitmap scan, which never marks the
-- dead entries it meets, so every batch revisits the entry of each job run since the last
-- VACUUM (an order of magnitude slower on a long drain). The status guard is written
-- "(…) IS TRUE" so that no status-partial index's predicate matches it.
UPDATE jobq_jobs j
SET status = 'succeeded',
    result = (%(results)s::text[])[width_bucket(j.id, %(ids)s::bigint[])]::jsonb,
    finished_at = now(), updated_at = now()
WHERE j.id = ANY(%(ids)s::bigint[]) AND (j.status = 'running') IS TRUE
  AND j.attempt = (%(attempts)s::int[])[width_bucket(j.id, %(ids)s::bigint[])]
RETURNING j.id

-- name: lock_running_job
-- Held for the whole of a transactional completion, so a rescuer cannot take the job meanwhile.
SELECT id FROM jobq_jobs
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'running'
FOR UPDATE

-- name: set_progress
UPDATE jobq_jobs SET progress = %(progress)s::jsonb, updated_at = now()
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'running'
RETURNING id

-- name: store_result
UPDATE jobq_jobs SET result = %(result)s::jsonb, updated_at = now()
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'succeeded'

-- name: fail_many
-- Found and filled as complete_many is (see there). A job whose cancellation was requested
-- is not retried: it ends cancelled.
WITH moved AS (
    UPDATE jobq_jobs j
    SET status = CASE
            WHEN j.cancel_requested THEN 'cancelled'
            WHEN (%(retry_in_s)s::float8[])[width_bucket(j.id, %(ids)s::bigint[])] IS NULL
                THEN 'failed'
            ELSE 'retrying' END,
        run_at = CASE
            WHEN j.cancel_requested
              OR (%(retry_in_s)s::float8[])[width_bucket(j.id, %(ids)s::bigint[])] IS NULL
                THEN j.run_at
            ELSE now() + make_interval(
                secs => (%(retry_in_s)s::float8[])[width_bucket(j.id, %(ids)s::bigint[])])
            END,
        finished_at = CASE
            WHEN j.cancel_requested
              OR (%(retry_in_s)s::float8[])[width_bucket(j.id, %(ids)s::bigint[])] IS NULL
                THEN now() END,
        last_error = (%(errors)s::text[])[width_bucket(j.id, %(ids)s::bigint[])],
        updated_at = now()
    WHERE j.id = ANY(%(ids)s::bigint[]) AND (j.status = 'running') IS TRUE
      AND j.attempt = (%(attempts)s::int[])[width_bucket(j.id, %(ids)s::bigint[])]
    RETURNING j.id, j.attempt, j.last_error,
              (%(tracebacks)s::text[])[width_bucket(j.id, %(ids)s::bigint[])] AS traceback
)
INSERT INTO jobq_job_errors (job_id, attempt, error, traceback)
SELECT id, attempt, last_error, traceback FROM moved
RETURNING job_id

-- name: finish_cancelled
WITH moved AS (
    UPDATE jobq_jobs
    SET status = 'cancelled', finished_at = now(), updated_at = now(), last_error = %(reason)s
    WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'running'
    RETURNING id, attempt
)
INSERT INTO jobq_job_errors (job_id, attempt, error)
SELECT id, attempt, %(reason)s FROM moved
RETURNING job_id

-- name: hand_back
UPDATE jobq_jobs
SET status = 'queued', attempt = attempt - 1, run_at = now(), updated_at = now()
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'running'
RETURNING id

-- name: cancel_requested_among
SELECT id FROM jobq_jobs
WHERE locked_by = %(worker_id)s AND status = 'running' AND cancel_requested

-- name: rescue_stale
WITH stale AS (
    SELECT j.id FROM jobq_jobs j
    WHERE j.status = 'running'
      AND j.heartbeat_at < now() - make_interval(secs => %(lease_s)s)
      AND NOT EXISTS (
          SELECT 1 FROM jobq_workers w
          WHERE w.id = j.locked_by AND w.heartbeat_at >= now() - make_interval(secs => %(lease_s)s))
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobq_jobs j
    SET status = CASE WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'retrying' END,
        run_at = now(),
        finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
        last_error = 'lease expired: worker ' || j.locked_by || ' stopped heartbeating',
        updated_at = now()
    FROM stale
    WHERE j.id = stale.id AND j.status = 'running'
    RETURNING j.id, j.attempt, j.last_error
)
INSERT INTO jobq_job_errors (job_id, attempt, error)
SELECT id, attempt, last_error FROM moved
RETURNING job_id

-- name: delete_stale_workers
DELETE FROM jobq_workers WHERE heartbeat_at < now() - make_interval(secs => %(lease_s)s)

-- name: register_worker
INSERT INTO jobq_workers (id, hostname, pid, queues, concurrency)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()

-- name: heartbeat
UPDATE jobq_workers SET heartbeat_at = now() WHERE id = %(id)s RETURNING id

-- name: unregister_worker
DELETE FROM jobq_workers WHERE id = %(id)s

-- name: list_workers
SELECT id, hostname, pid, queues, concurrency, started_at, heartbeat_at
FROM jobq_workers ORDER BY started_at, id

-- name: get_job
SELECT * FROM jobq_jobs WHERE id = %(id)s

-- name: list_jobs
-- Sent unprepared: planned for the statuses asked, a rare status is read through its partial
-- index, queued or running jobs through the claim or running index, the rest by id.
SELECT * FROM jobq_jobs
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: job_errors
SELECT job_id, attempt, error, traceback, recorded_at FROM jobq_job_errors
WHERE job_id = %(id)s ORDER BY id  -- oldest first: attempts restart after a requeue

-- name: cancel_pending
UPDATE jobq_jobs
SET status = 'cancelled', cancel_requested = true, finished_at = now(), updated_at = now()
WHERE id = %(id)s AND status IN ('queued', 'waiting', 'retrying')
RETURNING *

-- name: request_cancel
UPDATE jobq_jobs SET cancel_requested = true, updated_at = now()
WHERE id = %(id)s AND status = 'running'
RETURNING *

-- name: requeue
-- A job whose unique key another job holds meanwhile stays where it is.
UPDATE jobq_jobs j
SET status = 'queued', attempt = 0, run_at = now(), cancel_requested = false,
    finished_at = NULL, updated_at = now()
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.status IN ('failed', 'cancelled')
  AND (j.unique_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM jobq_jobs o
      WHERE o.unique_key = j.unique_key AND o.id <> j.id
        AND o.unique_key IS NOT NULL AND (o.unique_states & jobq_status_bit(o.status)) <> 0))
RETURNING j.id, j.queue

-- name: stats
SELECT queue, status, count(*) AS n, min(run_at) AS oldest_run_at
FROM jobq_jobs GROUP BY queue, status ORDER BY queue, status

-- name: queue_depth
SELECT count(*) FROM (
    SELECT 1 FROM jobq_jobs
    WHERE queue = %(queue)s AND status IN ('queued', 'retrying')
    LIMIT %(at_most)s
) AS waiting

-- name: forget_idempotency_keys
UPDATE jobq_jobs SET idempotency_key = NULL, request_fingerprint = NULL
WHERE idempotency_key IS NOT NULL
  AND created_at < now() - make_interval(secs => %(older_than_s)s)

-- name: count_claimable_by_queue
SELECT count(*) FROM jobq_jobs
WHERE status IN ('queued', 'retrying') AND run_at <= now() AND queue = ANY(%(queues)s::text[])

-- name: count_claimable_any_queue
SELECT count(*) FROM jobq_jobs WHERE status IN ('queued', 'retrying') AND run_at <= now()

-- name: take_leadership
-- Returns a row only when this holder has (or now takes over) the unexpired lease.
INSERT INTO jobq_leader (name, holder, expires_at)
VALUES (%(name)s, %(holder)s, now() + make_interval(secs => %(ttl_s)s))
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE jobq_leader.holder = EXCLUDED.holder OR jobq_leader.expires_at < now()
RETURNING holder

-- name: give_up_leadership
DELETE FROM jobq_leader WHERE name = %(name)s AND holder = %(holder)s

-- name: purge_finished
-- Small batches, oldest first, so retention never holds long locks. Succeeded jobs are found
-- through their finish-time index, failed and cancelled ones through the rare-status index:
-- either way a purge reads what it deletes, not every finished job. (Sent unprepared, so the
-- plan is made for the status given and can use the partial index that matches it.)
-- The ids are picked in a sub-select and deleted through the primary key (id = ANY(ARRAY(...)),
-- as the claims do): written "id IN (SELECT ...)", the planner joined them by hashing the
-- whole table, a sequential scan per batch (62-111 ms for 2,000 jobs among 200,000, by
-- EXPLAIN ANALYZE during the long-running benchmark). The outer WHERE repeats the
-- conditions, so that a job requeued from the dead-letter queue meanwhile is left alone.
-- The jobs' error history and dependency rows go in the same statement (migration 0006:
-- one delete per table and batch, not a cascade trigger per job).
WITH purged AS (
    DELETE FROM jobq_jobs
    WHERE id = ANY(ARRAY(
        SELECT id FROM jobq_jobs
        WHERE status = %(status)s
          AND finished_at < now() - make_interval(secs => %(older_than_s)s)
        ORDER BY finished_at
        LIMIT %(batch)s
    ))
      AND status = %(status)s
      AND finished_at < now() - make_interval(secs => %(older_than_s)s)
    RETURNING id
), history AS (
    DELETE FROM jobq_job_errors WHERE job_id = ANY(ARRAY(SELECT id FROM purged))
), edges AS (
    DELETE FROM jobq_job_dependencies WHERE job_id = ANY(ARRAY(SELECT id FROM purged))
)
SELECT id FROM purged

-- name: dead_rows
-- Dead row versions of the jobs table (the statistics lag its writers by a second or so), and
-- whether this role may VACUUM it (only its owner may).
SELECT s.n_dead_tup, pg_has_role(c.relowner, 'USAGE')
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relid = 'jobq_jobs'::regclass

-- name: vacuum_jobs
-- SKIP_LOCKED: when autovacuum is at the table already, it is done there. TRUNCATE false: the
-- space freed at the table's end is soon needed again, and giving it back to the operating
-- system takes a lock that makes every claim and completion wait.
VACUUM (SKIP_LOCKED, TRUNCATE false) jobq_jobs

-- name: claimable_sample
-- How many jobs wait to be claimed, counted up to a cap through the claim index.
SELECT count(*) FROM (
    SELECT 1 FROM jobq_jobs WHERE status IN ('queued', 'retrying') LIMIT %(cap)s
) AS waiting

-- name: claimable_estimate
-- What the planner believes that count is, from the table's statistics.
EXPLAIN (FORMAT JSON) SELECT 1 FROM jobq_jobs WHERE status IN ('queued', 'retrying')

-- name: try_statistics_lock
SELECT pg_try_advisory_xact_lock(%(key)s)

-- name: bound_analyze
-- ANALYZE must not wait behind a VACUUM or an index build, nor run for long: it is an
-- optimisation, and the next round tries again.
SELECT set_config('lock_timeout', '1s', true), set_config('statement_timeout', '60s', true)

-- name: analyze_jobs
ANALYZE (SKIP_LOCKED) jobq_jobs

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS jobq_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())

-- name: migrations_table_exists
SELECT to_regclass('jobq_migrations') IS NOT NULL

-- name: applied_migrations
SELECT version, checksum FROM jobq_migrations

-- name: record_migration
INSERT INTO jobq_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: forget_migration
DELETE FROM jobq_migrations WHERE version = %(version)s

-- name: pause_queue
-- A row when the queue was not paused yet (the caller then tells the workers).
INSERT INTO jobq_paused_queues (queue) VALUES (%(queue)s)
ON CONFLICT (queue) DO NOTHING
RETURNING queue

-- name: resume_queue
DELETE FROM jobq_paused_queues WHERE queue = %(queue)s RETURNING queue

-- name: notify_paused
SELECT pg_notify('jobq', %(event)s || ':' || %(queue)s)

-- name: paused_queues
SELECT queue, paused_at FROM jobq_paused_queues ORDER BY queue

-- name: waiting_queues
-- The queues that have jobs waiting to be claimed, one index probe per queue: a skip scan
-- down the claim index instead of reading every waiting job.
WITH RECURSIVE q(queue) AS (
    (SELECT queue FROM jobq_jobs WHERE status IN ('queued', 'retrying')
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM jobq_jobs j
            WHERE j.status IN ('queued', 'retrying') AND j.queue > q.queue
            ORDER BY j.queue LIMIT 1)
    FROM q WHERE q.queue IS NOT NULL
)
SELECT queue FROM q WHERE queue IS NOT NULL

-- name: status_by_queue
-- Jobs of one status by queue, reading at most %(cap)s of them (through the running or
-- rare-status index the status has), with the earliest run_at among those read.
SELECT queue, count(*), min(run_at) FROM (
    SELECT queue, run_at FROM jobq_jobs WHERE status = %(status)s LIMIT %(cap)s
) t
GROUP BY queue ORDER BY queue

-- name: waiting_by_queue
-- Jobs waiting to be claimed (queued or retrying) by queue, at most %(cap)s of them, and the
-- earliest run_at: every column is in the claim index, so it is read without the table.
SELECT queue, count(*), min(run_at) FROM (
    SELECT queue, run_at FROM jobq_jobs WHERE status IN ('queued', 'retrying') LIMIT %(cap)s
) t
GROUP BY queue ORDER BY queue

-- name: finished_counts
-- Succeeded and failed jobs by finish time, in buckets of %(bucket_s)s seconds since
-- %(since)s: succeeded ones through their finish-time index, failed ones (the dead-letter
-- set, few) through the rare-status index.
SELECT floor(extract(epoch FROM finished_at) / %(bucket_s)s)::bigint * %(bucket_s)s,
       status, count(*)
FROM jobq_jobs
WHERE status = 'succeeded' AND finished_at >= %(since)s
GROUP BY 1, 2
UNION ALL
SELECT floor(extract(epoch FROM finished_at) / %(bucket_s)s)::bigint * %(bucket_s)s,
       status, count(*)
FROM jobq_jobs
WHERE status = 'failed' AND finished_at >= %(since)s
GROUP BY 1, 2

-- name: finished_sample
-- Up to %(per_bucket)s of the latest jobs that succeeded in each bucket of %(bucket_s)s
-- seconds from %(since)s on: what the time-in-queue and run-time percentiles are computed
-- from, a bounded read per bucket through the finish-time index.
SELECT extract(epoch FROM s.finished_at)::float8,
       extract(epoch FROM s.started_at - s.run_at)::float8,
       extract(epoch FROM s.finished_at - s.started_at)::float8
FROM generate_series(%(since)s::timestamptz, now(), make_interval(secs => %(bucket_s)s)) AS b(start),
LATERAL (
    SELECT finished_at, started_at, run_at FROM jobq_jobs
    WHERE status = 'succeeded' AND started_at IS NOT NULL
      AND finished_at >= b.start AND finished_at < b.start + make_interval(secs => %(bucket_s)s)
    ORDER BY finished_at DESC
    LIMIT %(per_bucket)s
) AS s

-- name: running_by_worker
SELECT locked_by, count(*) FROM jobq_jobs WHERE status = 'running' GROUP BY locked_by

-- name: dependents_of
SELECT job_id FROM jobq_job_dependencies WHERE parent_id = %(id)s ORDER BY job_id LIMIT 100

-- name: discard_failed
-- Deletes dead letters (failed jobs only), with their error history and dependency rows as
-- retention does (purge_finished).
WITH gone AS (
    DELETE FROM jobq_jobs WHERE id = ANY(%(ids)s::bigint[]) AND status = 'failed'
    RETURNING id
), history AS (
    DELETE FROM jobq_job_errors WHERE job_id = ANY(ARRAY(SELECT id FROM gone))
), edges AS (
    DELETE FROM jobq_job_dependencies WHERE job_id = ANY(ARRAY(SELECT id FROM gone))
)
SELECT id FROM gone

-- name: rollup_start
-- The summary starts a day back, the longest window the dashboard shows.
INSERT INTO jobq_rollup_watermark (name, through)
VALUES ('finished', date_trunc('minute', now()) - interval '1 day')
ON CONFLICT (name) DO NOTHING

-- name: rollup_lock
-- One summarizer at a time (the row lock, until commit); the next span to summarize: up to
-- %(span_s)s seconds, ending at a minute that closed at least %(lag_s)s seconds ago, so that
-- completions still being committed for it are in. The last column: more is left after it.
SELECT through, until, until < date_trunc('minute', now() - make_interval(secs => %(lag_s)s))
FROM jobq_rollup_watermark,
LATERAL (SELECT least(through + make_interval(secs => %(span_s)s),
                      date_trunc('minute', now() - make_interval(secs => %(lag_s)s))) AS until) u
WHERE name = 'finished'
FOR UPDATE OF jobq_rollup_watermark

-- name: rollup_minutes
-- Succeeded and failed jobs each through their own finish-time index.
INSERT INTO jobq_finished_minutes (minute, status, jobs)
SELECT date_trunc('minute', finished_at), status, count(*) FROM jobq_jobs
WHERE status = 'succeeded' AND finished_at >= %(from)s AND finished_at < %(until)s
GROUP BY 1, 2
UNION ALL
SELECT date_trunc('minute', finished_at), status, count(*) FROM jobq_jobs
WHERE status = 'failed' AND finished_at >= %(from)s AND finished_at < %(until)s
GROUP BY 1, 2
ON CONFLICT (minute, status) DO UPDATE SET jobs = excluded.jobs

-- name: rollup_advance
UPDATE jobq_rollup_watermark SET through = %(until)s WHERE name = 'finished'

-- name: rollup_forget
DELETE FROM jobq_finished_minutes WHERE minute < now() - make_interval(secs => %(keep_s)s)

-- name: rollup_read
SELECT (SELECT through FROM jobq_rollup_watermark WHERE name = 'finished'),
       extract(epoch FROM minute)::bigint, status, jobs
FROM (SELECT 1) AS one
LEFT JOIN jobq_finished_minutes ON minute >= %(since)s

-- name: backlog
-- For the metrics endpoint. The queues with waiting jobs, found by a skip scan of the claim
-- index (one probe a queue, however many jobs), at most :queues of them; for each, its due
-- jobs counted up to :at_most and the wait of the oldest of those counted.
WITH RECURSIVE queues AS (
    (SELECT queue FROM jobq_jobs WHERE status IN ('queued', 'retrying') ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM jobq_jobs j
            WHERE j.status IN ('queued', 'retrying') AND j.queue > q.queue
            ORDER BY j.queue LIMIT 1)
    FROM queues q WHERE q.queue IS NOT NULL
)
SELECT q.queue, d.due, COALESCE(extract(epoch FROM now() - d.oldest), 0)::float8
FROM (SELECT queue FROM queues WHERE queue IS NOT NULL LIMIT %(queues)s) AS q
CROSS JOIN LATERAL (
    SELECT count(*) AS due, min(w.run_at) AS oldest FROM (
        SELECT j.run_at FROM jobq_jobs j
        WHERE j.queue = q.queue AND j.status IN ('queued', 'retrying') AND j.run_at <= now()
        -- The claim index's order: a walk of that index, never a scan of the table.
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT %(at_most)s
    ) AS w
) AS d
ORDER BY q.queue

-- name: backlog_workers
SELECT count(*), extract(epoch FROM now() - max(heartbeat_at))::float8 FROM jobq_workers

-- name: wal_position
-- Bytes of WAL this server holds: written, on a primary; replayed, on a standby. Read routing
-- compares the two (jobq/replica.py).
SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint

-- name: insert_api_key
INSERT INTO jobq_api_keys (id, name, tenant, scopes, secret_hash, expires_at)
VALUES (%(id)s, %(name)s, %(tenant)s, %(scopes)s, %(secret_hash)s, %(expires_at)s)
RETURNING id, name, tenant, scopes, secret_hash, created_at, expires_at, last_used_at,
          revoked_at

-- name: get_api_key
SELECT id, name, tenant, scopes, secret_hash, created_at, expires_at, last_used_at, revoked_at
FROM jobq_api_keys WHERE id = %(id)s

-- name: list_api_keys
SELECT id, name, tenant, scopes, secret_hash, created_at, expires_at, last_used_at, revoked_at
FROM jobq_api_keys ORDER BY created_at, id

-- name: revoke_api_key
UPDATE jobq_api_keys SET revoked_at = now() WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id

-- name: touch_api_keys
UPDATE jobq_api_keys SET last_used_at = now() WHERE id = ANY(%(ids)s::text[])

-- name: any_api_key
SELECT EXISTS (SELECT 1 FROM jobq_api_keys)

-- name: tenant_stats
SELECT queue, status, count(*) AS n, min(run_at) AS oldest_run_at
FROM jobq_jobs WHERE tenant = %(tenant)s GROUP BY queue, status ORDER BY queue, status

-- name: tenant_job_ids
SELECT id FROM jobq_jobs WHERE id = ANY(%(ids)s::bigint[]) AND tenant = %(tenant)s ORDER BY id

-- name: list_jobs_lean
-- list_jobs without the two columns whose size the client decides (payload, result): a
-- page of 1,000 rows stays small whatever the jobs carry.
SELECT id, queue, kind, '{}'::jsonb AS payload, status, priority, run_at, attempt,
       max_attempts, created_at, updated_at, tenant, idempotency_key, unique_key, depends_on,
       timeout_s, progress, NULL::jsonb AS result, last_error, cancel_requested, locked_by,
       heartbeat_at, request_id, started_at, finished_at, request_fingerprint, trace_context
FROM jobq_jobs
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
ORDER BY id DESC
LIMIT %(limit)s

-- Named queries of the SQLite driver. Every status change carries a WHERE status ... guard
-- matching jobq.model.TRANSITIONS; writes about a running job are also guarded by its attempt.
--
-- :now is always passed in by the driver (unix epoch seconds from Python): one clock for every
-- process on the host, and one value for every row a statement touches. Batches with keys or
-- parents arrive as one JSON array parameter read with json_each, so such a batch is one
-- statement whatever its size; plain batches go by executemany (insert_plain_job).
-- json_extract (not ->>) keeps SQLite 3.35, the first with RETURNING, enough.

-- name: insert_jobs
-- An idempotency key that exists already inserts nothing; the driver then reads the existing
-- job. ORDER BY j.key hands out ids in request order. The WHERE true is SQLite's required
-- disambiguation between a join's ON and the upsert's ON CONFLICT.
INSERT INTO jobq_jobs (queue, kind, payload, priority, run_at, max_attempts, tenant,
                       idempotency_key, unique_key, unique_states, depends_on, timeout_s,
                       request_id, request_fingerprint, status, created_at, updated_at,
                       trace_context)
SELECT json_extract(j.value, '$.queue'), json_extract(j.value, '$.kind'),
       json_extract(j.value, '$.payload'), json_extract(j.value, '$.priority'),
       COALESCE(json_extract(j.value, '$.run_at'), :now), json_extract(j.value, '$.max_attempts'),
       json_extract(j.value, '$.tenant'), json_extract(j.value, '$.idempotency_key'),
       json_extract(j.value, '$.unique_key'), json_extract(j.value, '$.unique_states'),
       json_extract(j.value, '$.depends_on'),
       json_extract(j.value, '$.timeout_s'), json_extract(j.value, '$.request_id'),
       json_extract(j.value, '$.request_fingerprint'),
       COALESCE(json_extract(j.value, '$.status'), 'queued'), :now, :now,
       json_extract(j.value, '$.trace_context')
FROM json_each(:jobs) AS j
WHERE true
ORDER BY j.key
-- No conflict target: a held idempotency key and a held unique key both skip the row.
ON CONFLICT DO NOTHING
RETURNING *

-- name: last_job_id
-- The highest id ever handed out (AUTOINCREMENT never reuses one), or 0 in a new database.
SELECT max(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'jobq_jobs'), 0),
           COALESCE((SELECT max(id) FROM jobq_jobs), 0))

-- name: insert_plain_job
-- One row of a batch without keys or parents, by executemany; positional parameters, as
-- executemany takes tuples: id, queue, kind, payload, priority, run_at, max_attempts,
-- tenant, timeout_s, request_id, now.
INSERT INTO jobq_jobs (id, queue, kind, payload, priority, run_at, max_attempts, tenant,
                       timeout_s, request_id, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)

-- name: insert_one_plain_job
-- insert_plain_job for a batch of one, in a statement that is its own transaction: the same
-- parameters but the id, which SQLite assigns.
INSERT INTO jobq_jobs (queue, kind, payload, priority, run_at, max_attempts, tenant,
                       timeout_s, request_id, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
RETURNING id

-- name: jobs_by_idempotency_keys
SELECT * FROM jobq_jobs WHERE idempotency_key IN (SELECT value FROM json_each(:keys))

-- name: jobs_by_unique_keys
-- The WHERE repeats the unique index's predicate word for word, so the index serves it.
SELECT * FROM jobq_jobs
WHERE unique_key IN (SELECT value FROM json_each(:keys))
  AND unique_key IS NOT NULL AND (unique_states & (CASE status
        WHEN 'queued' THEN 1 WHEN 'waiting' THEN 2 WHEN 'running' THEN 4
        WHEN 'retrying' THEN 8 WHEN 'succeeded' THEN 16 WHEN 'failed' THEN 32
        WHEN 'cancelled' THEN 64 ELSE 0 END)) <> 0

-- name: mark_parents
UPDATE jobq_jobs SET has_dependents = 1
WHERE id IN (SELECT value FROM json_each(:ids))
RETURNING id, status

-- name: insert_dependencies
-- :parents and :jobs are arrays of the same length: each pair is one dependency.
INSERT OR IGNORE INTO jobq_job_dependencies (parent_id, job_id)
SELECT p.value, j.value FROM json_each(:parents) AS p JOIN json_each(:jobs) AS j ON j.key = p.key

-- name: cancel_born_orphaned
UPDATE jobq_jobs
SET status = 'cancelled', finished_at = :now, updated_at = :now, last_error = :reason
WHERE id = :id AND status = 'waiting'
RETURNING *

-- name: tenant_queued
SELECT count(*) FROM jobq_jobs
WHERE status IN ('queued', 'retrying') AND tenant IS NOT NULL AND tenant = :tenant

-- name: claim_tenants
-- Fair claiming, step 1: the next tenants after :after with due work, one index probe each.
WITH RECURSIVE t(tenant) AS (
    SELECT (SELECT tenant FROM jobq_jobs INDEXED BY jobq_jobs_claim_by_tenant
            WHERE status IN ('queued', 'retrying') AND tenant IS NOT NULL
              AND tenant > :after AND run_at <= :now
              AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
              AND kind NOT IN (SELECT value FROM json_each(:skip_kinds))
              AND queue NOT IN (SELECT value FROM json_each(:skip_queues))
            ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant FROM jobq_jobs AS j INDEXED BY jobq_jobs_claim_by_tenant
            WHERE j.status IN ('queued', 'retrying') AND j.tenant IS NOT NULL
              AND j.tenant > t.tenant AND j.run_at <= :now
              AND (:queues IS NULL OR j.queue IN (SELECT value FROM json_each(:queues)))
              AND j.kind NOT IN (SELECT value FROM json_each(:skip_kinds))
              AND j.queue NOT IN (SELECT value FROM json_each(:skip_queues))
            ORDER BY j.tenant LIMIT 1)
    FROM t WHERE t.tenant IS NOT NULL
)
SELECT tenant FROM t WHERE tenant IS NOT NULL LIMIT :most

-- name: claim_fair
-- Fair claiming, step 2: up to its share of jobs from each of these tenants (:tenants and
-- :shares are arrays of the same length), each tenant's in priority order. Each tenant's
-- candidates are read down its index only as far as the largest share (:most_share).
WITH share(tenant, share) AS (
    SELECT t.value, s.value FROM json_each(:tenants) AS t
    JOIN json_each(:shares) AS s ON s.key = t.key
),
ranked AS (
    SELECT j.id, sh.share,
           ROW_NUMBER() OVER (PARTITION BY j.tenant ORDER BY j.priority DESC, j.run_at, j.id)
               AS n
    FROM share AS sh
    JOIN jobq_jobs AS j ON j.id IN (
        SELECT c.id FROM jobq_jobs AS c INDEXED BY jobq_jobs_claim_by_tenant
        WHERE c.status IN ('queued', 'retrying') AND c.tenant IS NOT NULL
          AND c.tenant = sh.tenant AND c.run_at <= :now
          AND (:queues IS NULL OR c.queue IN (SELECT value FROM json_each(:queues)))
          AND c.kind NOT IN (SELECT value FROM json_each(:skip_kinds))
          AND c.queue NOT IN (SELECT value FROM json_each(:skip_queues))
        ORDER BY c.priority DESC, c.run_at, c.id
        LIMIT :most_share)
)
UPDATE jobq_jobs
SET status = 'running', attempt = attempt + 1, locked_by = :worker_id,
    heartbeat_at = :now, started_at = :now, updated_at = :now
WHERE id IN (SELECT id FROM ranked WHERE n <= share)
RETURNING *

-- name: claim_filtered
-- The plain claim with the extra filters of limits and fairness.
UPDATE jobq_jobs
SET status = 'running', attempt = attempt + 1, locked_by = :worker_id,
    heartbeat_at = :now, started_at = :now, updated_at = :now
WHERE id IN (
    SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_claim_any_queue
    WHERE status IN ('queued', 'retrying') AND run_at <= :now
      AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
      AND kind NOT IN (SELECT value FROM json_each(:skip_kinds))
      AND queue NOT IN (SELECT value FROM json_each(:skip_queues))
      AND (NOT :tenantless OR tenant IS NULL)
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
RETURNING *

-- name: running_counts
SELECT kind, queue, count(*) FROM jobq_jobs
WHERE status = 'running'
  AND (kind IN (SELECT value FROM json_each(:kinds))
       OR queue IN (SELECT value FROM json_each(:queues)))
GROUP BY kind, queue

-- name: recent_starts
SELECT s.kind, count(*) FROM jobq_rate_starts AS s
JOIN json_each(:kinds) AS k ON k.value = s.kind
JOIN json_each(:windows) AS w ON w.key = k.key
WHERE s.started_at > :now - w.value
GROUP BY s.kind

-- name: prune_starts
-- :kinds and :windows are arrays of the same length: each kind's window in seconds.
DELETE FROM jobq_rate_starts
WHERE started_at <= :now - COALESCE(
    (SELECT w.value FROM json_each(:kinds) AS k JOIN json_each(:windows) AS w ON w.key = k.key
     WHERE k.value = jobq_rate_starts.kind), 0)

-- name: limited_candidates
SELECT id, kind, queue FROM jobq_jobs INDEXED BY jobq_jobs_claim_any_queue
WHERE status IN ('queued', 'retrying') AND run_at <= :now
  AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
  AND (kind IN (SELECT value FROM json_each(:limited_kinds))
       OR queue IN (SELECT value FROM json_each(:limited_queues)))
  AND kind NOT IN (SELECT value FROM json_each(:full_kinds))
  AND queue NOT IN (SELECT value FROM json_each(:full_queues))
ORDER BY priority DESC, run_at, id
LIMIT :limit

-- name: claim_ids
UPDATE jobq_jobs
SET status = 'running', attempt = attempt + 1, locked_by = :worker_id,
    heartbeat_at = :now, started_at = :now, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('queued', 'retrying')
RETURNING *

-- name: record_starts
INSERT INTO jobq_rate_starts (kind, started_at) SELECT value, :now FROM json_each(:kinds)

-- name: claim_batch_one_queue
-- One statement: the pick and the update cannot be split by another process's claim.
-- INDEXED BY because, without statistics, SQLite prefers jobq_jobs_status_id and sorts every
-- claimable row on each claim (about 20 ms per claim with 100k waiting, all of it under the
-- write lock). With the queue fixed by equality the claim index yields rows in claim order
-- and the read stops at the limit.
UPDATE jobq_jobs
SET status = 'running', attempt = attempt + 1, locked_by = :worker_id,
    heartbeat_at = :now, started_at = :now, updated_at = :now
WHERE id IN (
    SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_claim_by_queue
    WHERE queue = :queue AND status IN ('queued', 'retrying') AND run_at <= :now
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
RETURNING *

-- name: claim_batch_by_queue
-- claim_batch_one_queue for several queues. SQLite cannot merge the index's per-queue runs
-- in order, so it orders the candidates in a temporary B-tree; measured at 400,000 waiting
-- jobs, 1.5 ms per pick of 1,000 against 0.9 ms by equality on one queue.
UPDATE jobq_jobs
SET status = 'running', attempt = attempt + 1, locked_by = :worker_id,
    heartbeat_at = :now, started_at = :now, updated_at = :now
WHERE id IN (
    SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_claim_by_queue
    WHERE status IN ('queued', 'retrying') AND run_at <= :now
      AND queue IN (SELECT value FROM json_each(:queues))
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
RETURNING *

-- name: claim_batch_any_queue
UPDATE jobq_jobs
SET status = 'running', attempt = attempt + 1, locked_by = :worker_id,
    heartbeat_at = :now, started_at = :now, updated_at = :now
WHERE id IN (
    SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_claim_any_queue
    WHERE status IN ('queued', 'retrying') AND run_at <= :now
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
RETURNING *

-- name: complete_many
-- :completions is [{"id", "attempt", "result"}], result being JSON text or null.
UPDATE jobq_jobs AS j
SET status = 'succeeded', result = c.result, finished_at = :now, updated_at = :now
FROM (
    SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.attempt') AS attempt,
           json_extract(value, '$.result') AS result
    FROM json_each(:completions)
) AS c
-- The unary + keeps the planner off the status index: the batch must drive primary-key
-- lookups, else every running job is matched against the whole batch under the write lock.
WHERE j.id = c.id AND j.attempt = c.attempt AND +j.status = 'running'
RETURNING id

-- name: lock_running_job
-- Run inside BEGIN IMMEDIATE: the transaction holds the database's write lock, so no rescuer
-- can take the job until the transactional completion commits or rolls back.
SELECT id FROM jobq_jobs WHERE id = :id AND attempt = :attempt AND status = 'running'

-- name: set_progress
UPDATE jobq_jobs SET progress = :progress, updated_at = :now
WHERE id = :id AND attempt = :attempt AND status = 'running'
RETURNING id

-- name: store_result
UPDATE jobq_jobs SET result = :result, updated_at = :now
WHERE id = :id AND attempt = :attempt AND status = 'succeeded'

-- name: fail_many
-- :failures is [{"id", "attempt", "error", "retry_in_s"}]; the driver then records one
-- jobq_job_errors row (record_error) per job this moved, in the same transaction.
-- A job whose cancellation was requested is not retried: it ends cancelled.
UPDATE jobq_jobs AS j
SET status = CASE WHEN j.cancel_requested THEN 'cancelled'
                  WHEN f.retry_in_s IS NULL THEN 'failed' ELSE 'retrying' END,
    run_at = CASE WHEN f.retry_in_s IS NULL OR j.cancel_requested THEN j.run_at
                  ELSE :now + f.retry_in_s END,
    finished_at = CASE WHEN f.retry_in_s IS NULL OR j.cancel_requested THEN :now END,
    last_error = f.error, updated_at = :now
FROM (
    SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.attempt') AS attempt,
           json_extract(value, '$.error') AS error,
           json_extract(value, '$.retry_in_s') AS retry_in_s
    FROM json_each(:failures)
) AS f
WHERE j.id = f.id AND j.attempt = f.attempt AND +j.status = 'running'  -- + : see complete_many
RETURNING id, attempt

-- name: record_error
INSERT INTO jobq_job_errors (job_id, attempt, error, traceback, recorded_at)
VALUES (:job_id, :attempt, :error, :traceback, :now)

-- name: finish_cancelled
UPDATE jobq_jobs
SET status = 'cancelled', finished_at = :now, updated_at = :now, last_error = :reason
WHERE id = :id AND attempt = :attempt AND status = 'running'
RETURNING id, attempt

-- name: hand_back
UPDATE jobq_jobs
SET status = 'queued', attempt = attempt - 1, run_at = :now, updated_at = :now
WHERE id = :id AND attempt = :attempt AND status = 'running'
RETURNING id

-- name: cancel_requested_among
SELECT id FROM jobq_jobs
WHERE locked_by = :worker_id AND status = 'running' AND cancel_requested

-- name: rescue_stale
-- SET expressions see the row as it was, so the CASEs test the attempt that was running.
UPDATE jobq_jobs
SET status = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
    run_at = :now,
    finished_at = CASE WHEN attempt >= max_attempts THEN :now END,
    last_error = 'lease expired: worker ' || locked_by || ' stopped heartbeating',
    updated_at = :now
WHERE status = 'running'
  AND heartbeat_at < :now - :lease_s
  AND NOT EXISTS (
      SELECT 1 FROM jobq_workers AS w
      WHERE w.id = jobq_jobs.locked_by AND w.heartbeat_at >= :now - :lease_s)
RETURNING id, attempt, last_error

-- name: delete_stale_workers
DELETE FROM jobq_workers WHERE heartbeat_at < :now - :lease_s

-- name: register_worker
INSERT INTO jobq_workers (id, hostname, pid, queues, concurrency, started_at, heartbeat_at)
VALUES (:id, :hostname, :pid, :queues, :concurrency, :now, :now)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = :now

-- name: heartbeat
UPDATE jobq_workers SET heartbeat_at = :now WHERE id = :id RETURNING id

-- name: unregister_worker
DELETE FROM jobq_workers WHERE id = :id

-- name: list_workers
SELECT id, hostname, pid, queues, concurrency, started_at, heartbeat_at
FROM jobq_workers ORDER BY started_at, id

-- name: get_job
SELECT * FROM jobq_jobs WHERE id = :id

-- name: list_jobs
SELECT * FROM jobq_jobs
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:kind IS NULL OR kind = :kind)
  AND (:queue IS NULL OR queue = :queue)
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:created_after IS NULL OR created_at >= :created_after)
  AND (:created_before IS NULL OR created_at < :created_before)
  -- A plain range on the rowid, so a later page starts at its cursor: written as
  -- "(:before_id IS NULL OR id < :before_id)" it walked every newer job first (35-120 ms
  -- for a page in the middle of 1,000,000).
  AND id < coalesce(:before_id, 9223372036854775807)
ORDER BY id DESC
LIMIT :limit

-- name: job_errors
SELECT job_id, attempt, error, traceback, recorded_at FROM jobq_job_errors
WHERE job_id = :id ORDER BY id  -- oldest first: attempts restart after a requeue

-- name: cancel_pending
UPDATE jobq_jobs
SET status = 'cancelled', cancel_requested = 1, finished_at = :now, updated_at = :now
WHERE id = :id AND status IN ('queued', 'waiting', 'retrying')
RETURNING *

-- name: request_cancel
UPDATE jobq_jobs SET cancel_requested = 1, updated_at = :now
WHERE id = :id AND status = 'running'
RETURNING *

-- name: requeue
-- A job whose unique key another job holds meanwhile stays where it is.
UPDATE jobq_jobs
SET status = 'queued', attempt = 0, run_at = :now, cancel_requested = 0,
    finished_at = NULL, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('failed', 'cancelled')
  AND (unique_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM jobq_jobs AS o
      WHERE o.unique_key = jobq_jobs.unique_key AND o.id <> jobq_jobs.id
        AND o.unique_key IS NOT NULL AND (o.unique_states & (CASE o.status
            WHEN 'queued' THEN 1 WHEN 'waiting' THEN 2 WHEN 'running' THEN 4
            WHEN 'retrying' THEN 8 WHEN 'succeeded' THEN 16 WHEN 'failed' THEN 32
            WHEN 'cancelled' THEN 64 ELSE 0 END)) <> 0))
RETURNING id, queue

-- name: stats
SELECT queue, status, count(*) AS n, min(run_at) AS oldest_run_at
FROM jobq_jobs GROUP BY queue, status ORDER BY queue, status

-- name: queue_depth
SELECT count(*) FROM (
    SELECT 1 FROM jobq_jobs
    WHERE queue = :queue AND status IN ('queued', 'retrying')
    LIMIT :at_most
) AS waiting

-- name: forget_idempotency_keys
UPDATE jobq_jobs SET idempotency_key = NULL, request_fingerprint = NULL
WHERE idempotency_key IS NOT NULL AND created_at < :now - :older_than_s

-- name: count_claimable_by_queue
SELECT count(*) FROM jobq_jobs
WHERE status IN ('queued', 'retrying') AND run_at <= :now
  AND queue IN (SELECT value FROM json_each(:queues))

-- name: count_claimable_any_queue
SELECT count(*) FROM jobq_jobs WHERE status IN ('queued', 'retrying') AND run_at <= :now

-- name: take_leadership
-- Returns a row only when this holder has (or now takes over) the unexpired lease.
INSERT INTO jobq_leader (name, holder, expires_at)
VALUES (:name, :holder, :now + :ttl_s)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE jobq_leader.holder = excluded.holder OR jobq_leader.expires_at < :now
RETURNING holder

-- name: give_up_leadership
DELETE FROM jobq_leader WHERE name = :name AND holder = :holder

-- name: purge_finished
-- Small batches in id order (the status index), so retention never holds the lock long.
DELETE FROM jobq_jobs WHERE id IN (
    SELECT id FROM jobq_jobs
    WHERE status = :status AND finished_at < :now - :older_than_s
    ORDER BY status, id
    LIMIT :batch
)
RETURNING id

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS jobq_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at REAL NOT NULL)

-- name: migrations_table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobq_migrations'

-- name: applied_migrations
SELECT version, checksum FROM jobq_migrations

-- name: record_migration
INSERT INTO jobq_migrations (version, name, checksum, applied_at)
VALUES (:version, :name, :checksum, :now)

-- name: forget_migration
DELETE FROM jobq_migrations WHERE version = :version

-- name: pause_queue
INSERT INTO jobq_paused_queues (queue, paused_at) VALUES (:queue, :now)
ON CONFLICT (queue) DO NOTHING
RETURNING queue

-- name: resume_queue
DELETE FROM jobq_paused_queues WHERE queue = :queue RETURNING queue

-- name: paused_queues
SELECT queue, paused_at FROM jobq_paused_queues ORDER BY queue

-- name: waiting_queues
-- SQLite reads the distinct leading column of the claim index one probe per queue.
SELECT DISTINCT queue FROM jobq_jobs INDEXED BY jobq_jobs_claim_by_queue
WHERE status IN ('queued', 'retrying')
ORDER BY queue

-- name: status_by_queue
SELECT queue, count(*), min(run_at) FROM (
    SELECT queue, run_at FROM jobq_jobs WHERE status = :status LIMIT :cap
)
GROUP BY queue ORDER BY queue

-- name: waiting_by_queue
SELECT queue, count(*), min(run_at) FROM (
    SELECT queue, run_at FROM jobq_jobs INDEXED BY jobq_jobs_claim_by_queue
    WHERE status IN ('queued', 'retrying') LIMIT :cap
)
GROUP BY queue ORDER BY queue

-- name: finished_counts
-- Each status through its finish-time index, named: left to itself, the planner took the
-- status index and read every succeeded job (650 ms at 900,000).
SELECT CAST(finished_at / :bucket_s AS INTEGER) * :bucket_s, status, count(*)
FROM jobq_jobs INDEXED BY jobq_jobs_succeeded_finished
WHERE status = 'succeeded' AND finished_at >= :since
GROUP BY 1, 2
UNION ALL
SELECT CAST(finished_at / :bucket_s AS INTEGER) * :bucket_s, status, count(*)
FROM jobq_jobs INDEXED BY jobq_jobs_failed_finished
WHERE status = 'failed' AND finished_at >= :since
GROUP BY 1, 2

-- name: finished_sample
-- One bucket's share (the driver asks bucket by bucket: SQLite has no LATERAL).
SELECT finished_at, started_at - run_at, finished_at - started_at
FROM jobq_jobs INDEXED BY jobq_jobs_succeeded_finished
WHERE status = 'succeeded' AND started_at IS NOT NULL
  AND finished_at >= :start AND finished_at < :end
ORDER BY finished_at DESC
LIMIT :limit

-- name: running_by_worker
SELECT locked_by, count(*) FROM jobq_jobs WHERE status = 'running' GROUP BY locked_by

-- name: dependents_of
SELECT job_id FROM jobq_job_dependencies WHERE parent_id = :id ORDER BY job_id LIMIT 100

-- name: discard_failed
-- Deletes dead letters (failed jobs only); their error history and dependency rows go by
-- the foreign keys' cascade.
DELETE FROM jobq_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'failed'
RETURNING id

-- name: rollup_start
INSERT INTO jobq_rollup_watermark (name, through)
VALUES ('finished', CAST(:now / 60 AS INTEGER) * 60 - 86400)
ON CONFLICT (name) DO NOTHING

-- name: rollup_through
-- (SQLite: the write transaction already shuts out every other summarizer.)
SELECT through FROM jobq_rollup_watermark WHERE name = 'finished'

-- name: rollup_minutes
-- (WHERE true: SQLite reads an upsert's ON CONFLICT after a bare FROM as a join's ON.)
INSERT INTO jobq_finished_minutes (minute, status, jobs)
SELECT * FROM (
    SELECT CAST(finished_at / 60 AS INTEGER) * 60, status, count(*)
    FROM jobq_jobs INDEXED BY jobq_jobs_succeeded_finished
    WHERE status = 'succeeded' AND finished_at >= :from AND finished_at < :until
    GROUP BY 1, 2
    UNION ALL
    SELECT CAST(finished_at / 60 AS INTEGER) * 60, status, count(*)
    FROM jobq_jobs INDEXED BY jobq_jobs_failed_finished
    WHERE status = 'failed' AND finished_at >= :from AND finished_at < :until
    GROUP BY 1, 2
) WHERE true
ON CONFLICT (minute, status) DO UPDATE SET jobs = excluded.jobs

-- name: rollup_advance
UPDATE jobq_rollup_watermark SET through = :until WHERE name = 'finished'

-- name: rollup_forget
DELETE FROM jobq_finished_minutes WHERE minute < :now - :keep_s

-- name: rollup_read
SELECT (SELECT through FROM jobq_rollup_watermark WHERE name = 'finished'), minute, status, jobs
FROM (SELECT 1) AS one
LEFT JOIN jobq_finished_minutes ON minute >= :since

-- name: backlog
-- For the metrics endpoint; see the PostgreSQL query of the same name. Times are epoch
-- seconds, :now the caller's clock. Each count and minimum reads at most :at_most rows.
WITH RECURSIVE queues(queue) AS (
    SELECT (SELECT min(queue) FROM jobq_jobs WHERE status IN ('queued', 'retrying'))
    UNION ALL
    SELECT (SELECT min(j.queue) FROM jobq_jobs j
            WHERE j.status IN ('queued', 'retrying') AND j.queue > q.queue)
    FROM queues q WHERE q.queue IS NOT NULL
    LIMIT :queues + 1
)
SELECT queue,
       (SELECT count(*) FROM (
           SELECT 1 FROM jobq_jobs j
           WHERE j.queue = queues.queue AND j.status IN ('queued', 'retrying')
             AND j.run_at <= :now
           LIMIT :at_most)),
       COALESCE(:now - (SELECT min(run_at) FROM (
           SELECT j.run_at FROM jobq_jobs j
           WHERE j.queue = queues.queue AND j.status IN ('queued', 'retrying')
             AND j.run_at <= :now
           LIMIT :at_most)), 0.0)
FROM queues
WHERE queue IS NOT NULL
ORDER BY queue

-- name: backlog_workers
SELECT count(*), :now - max(heartbeat_at) FROM jobq_workers

-- name: insert_api_key
INSERT INTO jobq_api_keys (id, name, tenant, scopes, secret_hash, created_at, expires_at)
VALUES (:id, :name, :tenant, :scopes, :secret_hash, :now, :expires_at)
RETURNING id, name, tenant, scopes, secret_hash, created_at, expires_at, last_used_at,
          revoked_at

-- name: get_api_key
SELECT id, name, tenant, scopes, secret_hash, created_at, expires_at, last_used_at, revoked_at
FROM jobq_api_keys WHERE id = :id

-- name: list_api_keys
SELECT id, name, tenant, scopes, secret_hash, created_at, expires_at, last_used_at, revoked_at
FROM jobq_api_keys ORDER BY created_at, id

-- name: revoke_api_key
UPDATE jobq_api_keys SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL
RETURNING id

-- name: touch_api_keys
UPDATE jobq_api_keys SET last_used_at = :now WHERE id IN (SELECT value FROM json_each(:ids))

-- name: any_api_key
SELECT EXISTS (SELECT 1 FROM jobq_api_keys)

-- name: tenant_stats
SELECT queue, status, count(*) AS n, min(run_at) AS oldest_run_at
FROM jobq_jobs WHERE tenant = :tenant GROUP BY queue, status ORDER BY queue, status

-- name: tenant_job_ids
SELECT id FROM jobq_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND tenant = :tenant ORDER BY id

-- name: list_jobs_lean
-- list_jobs without the two columns whose size the client decides (payload, result): a
-- page of 1,000 rows stays small whatever the jobs carry.
SELECT id, queue, kind, '{}' AS payload, status, priority, run_at, attempt, max_attempts,
       created_at, updated_at, tenant, idempotency_key, unique_key, depends_on, timeout_s,
       progress, NULL AS result, last_error, cancel_requested, locked_by, heartbeat_at,
       request_id, started_at, finished_at, request_fingerprint, trace_context
FROM jobq_jobs
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:kind IS NULL OR kind = :kind)
  AND (:queue IS NULL OR queue = :queue)
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:created_after IS NULL OR created_at >= :created_after)
  AND (:created_before IS NULL OR created_at < :created_before)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit

-- Paused queues: workers claim no job of a queue named here until it is resumed. Workers
-- keep the set in memory (see worker/pausing.py), so the claim itself never reads this table.
CREATE TABLE jobq_paused_queues (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Periodic maintenance (rescue, retention) runs in one process at a time: the holder of an
-- unexpired row here. A holder that dies simply stops renewing, and the row expires.
CREATE TABLE jobq_leader (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);

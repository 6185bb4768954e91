-- API keys; the PostgreSQL migration 0007 in SQLite's terms (times as Unix seconds, scopes
-- as a JSON array). Only the SHA-256 of a key's secret is stored.
CREATE TABLE jobq_api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    tenant       TEXT,
    scopes       TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL,
    last_used_at REAL,
    revoked_at   REAL
);

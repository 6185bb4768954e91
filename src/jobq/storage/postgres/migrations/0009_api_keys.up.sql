-- API keys. The secret is never stored: only the SHA-256 of it, looked up by the key's
-- public id (the part of the key before its secret). tenant NULL: a key for every tenant.
CREATE TABLE jobq_api_keys (
    id           text PRIMARY KEY,
    name         text,
    tenant       text,
    scopes       text[] NOT NULL,
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- API tokens, kept outside the event log: the log is readable by every
-- viewer and must never carry credentials, not even hashed ones. A token is
-- `crm_<token_id>_<secret>`; only the public id and the SHA-256 of the
-- secret are stored, so a copy of the database lets nobody in.
CREATE TABLE api_tokens (
    token_id      TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

-- A fingerprint of the request an idempotency key was first used for, so
-- that reusing the key for a different request is refused rather than
-- silently answered with the first one's result. Older keys have none.
ALTER TABLE idempotency_keys ADD COLUMN request_hash TEXT;

-- How many commits have destroyed a key. An appender keeps the keys it
-- has used (`seal.rs`, KeyCache) while this count is the one it saw: every
-- commit reads it under the write lock first, and a commit that erases
-- raises it, so an erasure by any server empties every other's cache.
ALTER TABLE store_format ADD COLUMN erasures BIGINT NOT NULL DEFAULT 0;

-- A key row is written for every new person: keep it to the subject and
-- the key (when a subject was first named is its first event's time;
-- erased_at stays, the one date nothing else in the key table records).
ALTER TABLE subject_keys DROP COLUMN created_at;

-- Personal data, sealed per data subject (crypto-shredding, `seal.rs`).
-- An event's personal fields are stored apart from `data`, sealed with the
-- key of the person they name; the hash chain covers the sealed bytes.
-- Subjects are the 16 bytes of their UUID: the key table is one B-tree
-- (WITHOUT ROWID) keyed by them, small enough to stay in the page cache.
ALTER TABLE events ADD COLUMN data_subject BLOB;
ALTER TABLE events ADD COLUMN sealed BLOB;

-- One key per data subject, outside the log. Erasure destroys the key (it
-- becomes NULL, the row stays): every part sealed with it reads as erased,
-- on every server, from that commit on, and a part appended for the
-- subject later is sealed with a key nobody keeps.
CREATE TABLE subject_keys (
    subject    BLOB PRIMARY KEY,
    key        BLOB,
    created_at TEXT NOT NULL,
    erased_at  TEXT
) WITHOUT ROWID;

-- Which format the log holds. Format 2 seals personal fields from
-- `sealed_from` on: 1 for a store made with it; a store made before holds
-- its earlier events' personal fields in plain text, where erasure cannot
-- reach them.
CREATE TABLE store_format (format INTEGER NOT NULL, sealed_from BIGINT NOT NULL);
INSERT INTO store_format SELECT 2, COALESCE(MAX(position), 0) + 1 FROM events;

-- The append-only event log. Positions are assigned by the single writer
-- inside a BEGIN IMMEDIATE transaction, so they are gapless and commit order
-- equals position order. `position` is the rowid: appends go to the end of
-- the table's B-tree.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    occurred_at    TEXT    NOT NULL, -- RFC 3339, UTC, microseconds: sorts as text
    recorded_at    TEXT    NOT NULL,
    correlation_id TEXT,
    causation_id   TEXT,
    hash           TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);

-- One row per append that carried an idempotency key: a retry finds the
-- original result here and writes nothing.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    first_position  INTEGER NOT NULL,
    last_position   INTEGER NOT NULL,
    stream_version  INTEGER NOT NULL
);

-- History is immutable: the database itself refuses to change or remove it.
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: UPDATE of events refused'); END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: DELETE from events refused'); END;

CREATE TRIGGER idempotency_keys_refuse_update BEFORE UPDATE ON idempotency_keys
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: UPDATE refused'); END;

CREATE TRIGGER idempotency_keys_refuse_delete BEFORE DELETE ON idempotency_keys
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: DELETE refused'); END;

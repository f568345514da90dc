-- Snapshots of read models: one row per model holding its state and the
-- last log position folded into it, written in one statement so that state
-- and checkpoint can never disagree. Read models may be thrown away at any
-- time; this table is a cache, not history, and is the one mutable table.
CREATE TABLE snapshots (
    name      TEXT    PRIMARY KEY,
    position  INTEGER NOT NULL,
    data      TEXT    NOT NULL,
    saved_at  TEXT    NOT NULL
);

-- "Who changed what": the audit reads one actor's events in log order.
CREATE INDEX events_by_actor ON events (actor, position);

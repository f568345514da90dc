-- The append-only event log. Every append transaction first takes
-- `LOCK TABLE events IN EXCLUSIVE MODE`, which admits readers but only one
-- writer at a time, in this process or any other. The writer reads the tail
-- and assigns position = tail + 1 itself (no sequence, which would leave gaps
-- on rollback), so positions are gapless and commit order equals position
-- order: a reader that has seen position p has seen everything before p.
CREATE TABLE events (
    position       BIGINT      PRIMARY KEY,
    stream_id      TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 1),
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    data           TEXT        NOT NULL, -- the exact bytes hashed; jsonb would reorder keys
    actor          TEXT        NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    correlation_id UUID,
    causation_id   UUID,
    hash           TEXT        NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE TABLE idempotency_keys (
    idempotency_key TEXT   PRIMARY KEY,
    stream_id       TEXT   NOT NULL,
    first_position  BIGINT NOT NULL,
    last_position   BIGINT NOT NULL,
    stream_version  BIGINT NOT NULL
);

-- History is immutable: the database itself refuses to change or remove it.
CREATE FUNCTION refuse_change_to_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_history();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_history();
CREATE TRIGGER idempotency_keys_refuse_update_delete BEFORE UPDATE OR DELETE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_history();
CREATE TRIGGER idempotency_keys_refuse_truncate BEFORE TRUNCATE ON idempotency_keys
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_history();
